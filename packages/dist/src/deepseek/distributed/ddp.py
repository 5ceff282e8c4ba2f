"""``DDPStrategy`` (name ``ddp``): one process per device, gradients all-reduced by
``torch.nn.parallel.DistributedDataParallel``.

The Trainer drives it like any ``Strategy``; launch the script with torchrun::

    torchrun --nproc-per-node 2 train.py      # train.py: Trainer(..., strategy="ddp")
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deepseek.distributed.base import ProcessGroupStrategy, check_reduce_strategy
from deepseek.distributed.compression import GradientCompression


def _ddp_options() -> list[str]:
    names = inspect.signature(DistributedDataParallel.__init__).parameters
    return sorted(n for n in names if n not in ("self", "module"))


class DDPStrategy(ProcessGroupStrategy):
    """Data parallelism over the default process group.

    ``ddp_kwargs`` are forwarded to ``DistributedDataParallel`` (``find_unused_parameters``,
    ``gradient_as_bucket_view``, ``static_graph``, ...). ``gradient_compression`` picks a
    communication hook by name (``fp16``, ``bf16``, ``powersgd`` or a mapping such as
    ``{"name": "powersgd", "rank": 2}``; see :mod:`deepseek.distributed.compression`);
    ``reduce_strategy`` is ``"gradient_average"`` (DDP's mean over ranks) or
    ``"gradient_sum"``. ``setup`` joins the process group from torchrun's (or SLURM's)
    environment unless one already exists (then it is reused and left open by
    ``teardown``); without either it joins a world of one process.

    >>> strategy = DDPStrategy(find_unused_parameters=True)
    >>> strategy.world_size, strategy.rank     # before setup: a single process
    (1, 0)
    """

    name = "ddp"

    def __init__(
        self,
        *,
        gradient_compression: str | Mapping[str, Any] | None = None,
        reduce_strategy: str = "gradient_average",
        timeout_s: float | None = None,
        backend: str | None = None,
        **ddp_kwargs: Any,
    ) -> None:
        super().__init__(timeout_s=timeout_s, backend=backend)
        unknown = sorted(set(ddp_kwargs) - set(_ddp_options()))
        if unknown:
            raise TypeError(
                f"DDPStrategy got unknown DistributedDataParallel option(s) {unknown}; "
                f"valid options: {', '.join(_ddp_options())}, plus gradient_compression, "
                "reduce_strategy, timeout_s, backend"
            )
        self.ddp_kwargs = dict(ddp_kwargs)
        self.reduce_strategy = check_reduce_strategy(reduce_strategy)
        # Built now so a bad name fails on every rank before any collective.
        self.compression = GradientCompression.from_value(
            gradient_compression, reduce_strategy=reduce_strategy
        )

    # -- model ---------------------------------------------------------------------------
    def setup_model(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to this process's device and wrap it in DistributedDataParallel."""
        self._require_group()
        self._require_trainable(model, "ddp")
        model = model.to(self.device)
        kwargs = dict(self.ddp_kwargs)
        if self.device.type == "cuda":
            kwargs.setdefault("device_ids", [self.device.index])
        wrapped = DistributedDataParallel(model, **kwargs)
        if self.compression.name != "none" or self.reduce_strategy != "gradient_average":
            self.compression.register(wrapped)
        return wrapped

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
