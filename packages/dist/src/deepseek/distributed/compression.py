"""Gradient compression for ``ddp``: torch's DDP communication hooks, chosen by name.

===========  ==============================================================================
name         hook (``torch.distributed.algorithms.ddp_comm_hooks``)
===========  ==============================================================================
``none``     plain all-reduce of each bucket (what DDP does without a hook)
``fp16``     ``default_hooks.fp16_compress_hook``: buckets cast to float16 (half the bytes)
``bf16``     ``default_hooks.bf16_compress_hook``: buckets cast to bfloat16
``powersgd`` ``powerSGD_hook.powerSGD_hook`` with ``rank`` (matrix approximation rank),
             ``warmup_steps`` (plain all-reduce before, torch's ``start_powerSGD_iter``),
             ``error_feedback`` and ``warm_start``, ``min_compression_rate``
===========  ==============================================================================

Every hook is wrapped by a counter of the bytes handed to the collective per backward
pass (``GradientCompression.bytes_per_step``), and by the ``reduce_strategy``:
``gradient_average`` (DDP's mean) or ``gradient_sum`` (the sum over ranks).

    >>> compression = GradientCompression.from_value({"name": "powersgd", "rank": 2})
    >>> compression.name, compression.options["rank"]
    ('powersgd', 2)
    >>> GradientCompression.from_value("zip")
    Traceback (most recent call last):
    ...
    ValueError: unknown gradient compression 'zip'; known: none, fp16, bf16, powersgd
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powersgd

COMPRESSIONS = ("none", "fp16", "bf16", "powersgd")
_POWERSGD_OPTIONS = {
    "rank": 1,
    "warmup_steps": 10,
    "error_feedback": True,
    "warm_start": True,
    "min_compression_rate": 2.0,
    "seed": 0,
}


class GradientCompression:
    """A named DDP communication hook plus a byte counter. Build with :meth:`from_value`,
    attach with :meth:`register` (after ``DistributedDataParallel`` wrapped the model)."""

    def __init__(
        self, name: str = "none", reduce_strategy: str = "gradient_average", **options: Any
    ) -> None:
        key = name.strip().lower() if isinstance(name, str) else name
        if key not in COMPRESSIONS:
            raise ValueError(
                f"unknown gradient compression {name!r}; known: {', '.join(COMPRESSIONS)}"
            )
        from deepseek.distributed.base import check_reduce_strategy

        self.reduce_strategy = check_reduce_strategy(reduce_strategy)
        self.name = key
        allowed = _POWERSGD_OPTIONS if key == "powersgd" else {}
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            hint = f"; {key} accepts: {', '.join(allowed)}" if allowed else f"; {key} takes none"
            raise ValueError(f"unknown option(s) {unknown} for gradient compression {key!r}{hint}")
        self.options = {**allowed, **options}
        if key == "powersgd":
            rank = self.options["rank"]
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ValueError(f"powersgd rank must be a positive int, got {rank!r}")
            needs_two = self.options["error_feedback"] or self.options["warm_start"]
            if needs_two and self.options["warmup_steps"] < 2:
                raise ValueError(
                    "powersgd warmup_steps must be >= 2 when error_feedback or warm_start is "
                    f"on (torch's start_powerSGD_iter rule), got {self.options['warmup_steps']}"
                )
        self.bytes_per_step: list[int] = []
        self._current = 0
        self.state: Any = None

    @classmethod
    def from_value(
        cls, value: str | Mapping[str, Any] | GradientCompression | None, **defaults: Any
    ) -> GradientCompression:
        """``"fp16"``, ``{"name": "powersgd", "rank": 2}``, None (``none``) or an instance."""
        if isinstance(value, GradientCompression):
            return value
        if value is None:
            return cls("none", **defaults)
        if isinstance(value, str):
            return cls(value, **defaults)
        if isinstance(value, Mapping):
            options = dict(value)
            if "name" not in options:
                raise ValueError(
                    f"gradient_compression as a mapping needs a 'name' key "
                    f"({', '.join(COMPRESSIONS)}), got {options}"
                )
            return cls(options.pop("name"), **{**defaults, **options})
        raise TypeError(
            f"gradient_compression must be a name, a mapping with 'name', or None; got "
            f"{type(value).__name__}"
        )

    # -- the hook ------------------------------------------------------------------------
    def _base_hook(self) -> tuple[Any, Callable[..., torch.futures.Future]]:
        if self.name == "fp16":
            return None, default_hooks.fp16_compress_hook
        if self.name == "bf16":
            return None, default_hooks.bf16_compress_hook
        if self.name == "powersgd":
            o = self.options
            state = powersgd.PowerSGDState(
                process_group=None,
                matrix_approximation_rank=o["rank"],
                start_powerSGD_iter=o["warmup_steps"],
                min_compression_rate=o["min_compression_rate"],
                use_error_feedback=o["error_feedback"],
                warm_start=o["warm_start"],
                random_seed=o["seed"],
            )
            return state, powersgd.powerSGD_hook
        return None, _allreduce_hook

    def _bytes(self, bucket: dist.GradBucket, before: tuple[int, int]) -> int:
        buffer = bucket.buffer()
        if self.name in ("fp16", "bf16"):
            return buffer.numel() * 2
        if self.name == "powersgd":
            state = self.state
            after = state.total_numel_after_compression - before[1]
            if state.total_numel_before_compression - before[0] > 0:  # compressed this call
                return after * buffer.element_size()
        return buffer.numel() * buffer.element_size()

    def hook(self) -> tuple[Any, Callable[..., torch.futures.Future]]:
        """``(state, hook)`` for ``DistributedDataParallel.register_comm_hook``."""
        self.state, base = self._base_hook()
        summing = self.reduce_strategy == "gradient_sum"

        # No annotations: DDP checks them, and postponed (string) ones fail its check.
        def counted(state, bucket):
            stats = (
                (state.total_numel_before_compression, state.total_numel_after_compression)
                if self.name == "powersgd"
                else (0, 0)
            )
            if summing and self.name == "none":
                fut = _allreduce_hook(state, bucket, divide=False)
            else:
                fut = base(state, bucket)
            self._current += self._bytes(bucket, stats)
            if bucket.is_last():
                self.bytes_per_step.append(self._current)
                self._current = 0
            if summing and self.name != "none":
                world = dist.get_world_size()
                return fut.then(lambda f: f.value().mul_(world))
            return fut

        return self.state, counted

    def register(self, ddp_model: torch.nn.parallel.DistributedDataParallel) -> None:
        """Attach this compression to a ``DistributedDataParallel`` model."""
        state, hook = self.hook()
        ddp_model.register_comm_hook(state, hook)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"GradientCompression({self.name!r}{extra})"


def _allreduce_hook(
    state: Any, bucket: dist.GradBucket, divide: bool = True
) -> torch.futures.Future[torch.Tensor]:
    """DDP's own all-reduce: sum over ranks, divided by the world size unless summing."""
    buffer = bucket.buffer()
    group = state if isinstance(state, dist.ProcessGroup) else None
    world = dist.get_world_size(group)
    if divide:
        buffer.div_(world)
    fut = dist.all_reduce(buffer, group=group, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])
