"""``ProcessGroupStrategy``: what every multi-process strategy shares (joining the group,
the device per local rank, collectives for metrics), built on ``torch.distributed``.

``ddp``, ``fsdp``, ``tp``, ``2d`` and ``pipeline`` subclass it and only add how the model
is spread. Outside torchrun (no ``RANK``/``WORLD_SIZE``), ``setup`` joins a world of one
process, so a script runs unchanged with and without a launcher.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from deepseek.backends import Backend
from deepseek.distributed.process_group import (
    current_launch,
    init_process_group,
    monitored_barrier,
    peer_error,
    resolve_timeout,
)
from deepseek.training.strategy import Strategy

_REDUCE_OPS = {
    "sum": dist.ReduceOp.SUM,
    "mean": dist.ReduceOp.SUM,  # divided afterwards: gloo has no AVG
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
}
REDUCE_STRATEGIES = ("gradient_average", "gradient_sum")


def check_reduce_strategy(value: str) -> str:
    if value not in REDUCE_STRATEGIES:
        raise ValueError(
            f"reduce_strategy must be one of {', '.join(REDUCE_STRATEGIES)}, got {value!r}"
        )
    return value


class ProcessGroupStrategy(Strategy):
    """A strategy over the default process group (joined in ``setup`` unless one exists).

    ``timeout_s`` bounds every collective (default 1800 s, or ``$DEEPSEEK_DIST_TIMEOUT_S``);
    ``backend`` overrides the collective backend the device suggests (``"gloo"``,
    ``"nccl"``). A group that ``setup`` created is destroyed by ``teardown``; one that
    existed before is reused and left open.
    """

    name = "process-group"

    def __init__(self, *, timeout_s: float | None = None, backend: str | None = None) -> None:
        super().__init__()
        self.timeout_s = resolve_timeout(timeout_s).total_seconds() if timeout_s else None
        self.collective = backend
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
            raise RuntimeError(
                f"the {self.name} strategy needs torch.distributed, which this build lacks"
            )
        joining = not dist.is_initialized()
        if joining:
            self.local_rank = current_launch().local_rank
        elif os.environ.get("LOCAL_RANK", "").isdigit():
            self.local_rank = int(os.environ["LOCAL_RANK"])
        if joining and self.collective is not None:
            from deepseek.distributed.process_group import check_collective_backend

            check_collective_backend(self.collective)  # nccl on a CPU machine: say so now
        self.device = self._pick_device(backend)
        if joining:  # NCCL wants the device chosen before the group is created
            init_process_group(self.collective or backend, timeout_s=self.timeout_s)
            self._owns_group = True

    def _pick_device(self, backend: Backend) -> torch.device:
        if backend.device_type == "cpu" or self.local_rank is None:
            return backend.device()  # the CPU, or the device the caller already selected
        device = backend.device(self.local_rank)
        backend.set_device(device)  # each rank on its own device (cuda, rocm, plugins')
        return device

    def teardown(self) -> None:
        """Destroy the process group if ``setup`` created it (safe to call twice)."""
        if self._owns_group and self._initialized():
            dist.destroy_process_group()
        self._owns_group = False

    def barrier(self) -> None:
        """Wait for every rank; on gloo a rank that does not arrive is named in the error."""
        if not self._initialized():
            return
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            monitored_barrier(self.timeout_s)

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
        try:
            dist.all_reduce(result, op=_REDUCE_OPS[key])
        except (RuntimeError, dist.DistError) as exc:
            raise peer_error(exc, f"reduce({op!r})") from exc
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
        try:
            dist.broadcast_object_list(objects, src=src, device=device)
        except (RuntimeError, dist.DistError) as exc:
            raise peer_error(exc, "broadcast") from exc
        return objects[0]

    def _require_group(self) -> None:
        if not self._initialized():
            raise RuntimeError(
                f"{type(self).__name__}.setup(backend) must run before setup_model: it joins "
                "the process group"
            )

    @staticmethod
    def _require_trainable(model: torch.nn.Module, name: str) -> None:
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                f"the {name} strategy needs a model with trainable parameters; "
                f"{type(model).__name__} has none"
            )

    def agree(self, error: str | None) -> None:
        """Raise ``error`` on every rank if any rank found one (so no rank is left waiting
        in a collective); the message of the lowest failing rank wins."""
        if not self._initialized() or self.world_size == 1:
            if error:
                raise ValueError(error)
            return
        errors: list[str | None] = [None] * self.world_size
        dist.all_gather_object(errors, error)
        for rank, message in enumerate(errors):
            if message:
                raise ValueError(message if rank == self.rank else f"rank {rank}: {message}")
