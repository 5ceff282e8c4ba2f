"""``DDPStrategy`` (name ``ddp``): one process per device, gradients all-reduced by
``torch.nn.parallel.DistributedDataParallel``.

The Trainer drives it like any ``Strategy``; launch the script with torchrun::

    torchrun --nproc-per-node 2 train.py      # train.py: Trainer(..., strategy="ddp")
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deepseek.backends import Backend
from deepseek.distributed.process_group import init_process_group, launch_env
from deepseek.training.strategy import Strategy

_REDUCE_OPS = {
    "sum": dist.ReduceOp.SUM,
    "mean": dist.ReduceOp.SUM,  # divided afterwards: gloo has no AVG
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
}


def _ddp_options() -> list[str]:
    names = inspect.signature(DistributedDataParallel.__init__).parameters
    return sorted(n for n in names if n not in ("self", "module"))


class DDPStrategy(Strategy):
    """Data parallelism over the default process group.

    ``ddp_kwargs`` are forwarded to ``DistributedDataParallel`` (``find_unused_parameters``,
    ``gradient_as_bucket_view``, ``static_graph``, ...). ``setup`` joins the process group
    from torchrun's environment unless one already exists (then it is reused and left
    open by ``teardown``).

    >>> strategy = DDPStrategy(find_unused_parameters=True)
    >>> strategy.world_size, strategy.rank     # before setup: a single process
    (1, 0)
    """

    name = "ddp"

    def __init__(self, **ddp_kwargs: Any) -> None:
        super().__init__()
        unknown = sorted(set(ddp_kwargs) - set(_ddp_options()))
        if unknown:
            raise TypeError(
                f"DDPStrategy got unknown DistributedDataParallel option(s) {unknown}; "
                f"valid options: {', '.join(_ddp_options())}"
            )
        self.ddp_kwargs = dict(ddp_kwargs)
        self.local_rank: int | None = None
        self._owns_group = False

    # -- process topology ----------------------------------------------------------------
    @staticmethod
    def _initialized() -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def world_size(self) -> int:
        return dist.get_world_size() if self._initialized() else 1

    @property
    def rank(self) -> int:
        return dist.get_rank() if self._initialized() else 0

    def setup(self, backend: Backend) -> None:
        """Pick this process's device (by LOCAL_RANK) and join the process group."""
        self.backend = backend
        if not dist.is_available():
            raise RuntimeError("the ddp strategy needs torch.distributed, which this build lacks")
        joining = not dist.is_initialized()
        if joining:
            self.local_rank = launch_env().local_rank
        elif os.environ.get("LOCAL_RANK", "").isdigit():
            self.local_rank = int(os.environ["LOCAL_RANK"])
        self.device = self._pick_device(backend)
        if joining:  # NCCL wants the device chosen before the group is created
            init_process_group(backend)
            self._owns_group = True

    def _pick_device(self, backend: Backend) -> torch.device:
        if backend.device_type == "cpu" or self.local_rank is None:
            return backend.device()  # the CPU, or the device the caller already selected
        device = backend.device(self.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return device

    def teardown(self) -> None:
        """Destroy the process group if ``setup`` created it."""
        if self._owns_group and self._initialized():
            dist.destroy_process_group()
        self._owns_group = False

    def barrier(self) -> None:
        if not self._initialized():
            return
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def reduce(self, value: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """All-reduce a copy of ``value`` with ``"sum"``, ``"mean"``, ``"max"`` or ``"min"``.

        The input is left untouched and the result is detached, on the input's device.
        """
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"reduce needs a torch.Tensor, got {type(value).__name__}")
        key = op.strip().lower() if isinstance(op, str) else op
        if key not in _REDUCE_OPS:
            raise ValueError(f"unknown reduce op {op!r}; use one of {', '.join(_REDUCE_OPS)}")
        if not self._initialized():
            return value
        result = value.detach().to(self.device, copy=True)  # all_reduce works in place
        dist.all_reduce(result, op=_REDUCE_OPS[key])
        if key == "mean":
            result = result / self.world_size
        return result.to(value.device)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank (any picklable object; peers are trusted)."""
        if not self._initialized():
            return obj
        if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < self.world_size:
            raise ValueError(f"src must be a rank in [0, {self.world_size}), got {src!r}")
        objects = [obj]
        device = None if self.device.type == "cpu" else self.device
        dist.broadcast_object_list(objects, src=src, device=device)
        return objects[0]

    # -- model ---------------------------------------------------------------------------
    def setup_model(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to this process's device and wrap it in DistributedDataParallel."""
        if not self._initialized():
            raise RuntimeError(
                "DDPStrategy.setup(backend) must run before setup_model: it joins the process group"
            )
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                f"the ddp strategy needs a model with trainable parameters; "
                f"{type(model).__name__} has none"
            )
        model = model.to(self.device)
        kwargs = dict(self.ddp_kwargs)
        if self.device.type == "cuda":
            kwargs.setdefault("device_ids", [self.device.index])
        return DistributedDataParallel(model, **kwargs)

    @contextlib.contextmanager
    def no_backward_sync(self, model: nn.Module, enabled: bool) -> Iterator[None]:
        """While enabled, backward passes accumulate local gradients without all-reduce;
        the next backward outside it synchronises the accumulated gradients."""
        if not enabled:
            yield
            return
        with _find_ddp(model).no_sync():
            yield

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.ddp_kwargs.items())
        return f"{type(self).__name__}({options})"


def _find_ddp(model: nn.Module) -> DistributedDataParallel:
    """The DistributedDataParallel inside ``model`` (which torch.compile may wrap)."""
    current: Any = model
    while isinstance(current, nn.Module):
        if isinstance(current, DistributedDataParallel):
            return current
        current = getattr(current, "_orig_mod", None)
    raise TypeError(
        "no_backward_sync needs the model returned by DDPStrategy.setup_model "
        f"(a DistributedDataParallel), got {type(model).__name__}"
    )
