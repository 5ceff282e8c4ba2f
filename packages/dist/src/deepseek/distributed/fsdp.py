"""``FSDPStrategy`` (name ``fsdp``): fully sharded data parallelism with FSDP2
(``torch.distributed.fsdp.fully_shard``).

Each repeated block (the blocks activation checkpointing finds: the children of a
``ModuleList``/``Sequential`` of same-class blocks) becomes its own FSDP unit, then the
root: parameters, gradients and optimizer state are sharded over the ranks, and a block's
parameters are gathered only while it runs. The Trainer's precision sets the
mixed-precision policy (``bf16-mixed``: parameters cast to bfloat16 for compute,
gradients reduced in float32).

    Trainer(..., strategy="fsdp")
    Trainer(..., strategy=FSDPStrategy(cpu_offload=True))   # with options
    # YAML: trainer: {strategy: {name: fsdp, cpu_offload: true}}
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)

from deepseek.distributed.base import check_reduce_strategy
from deepseek.distributed.sharded import DTensorStrategy, find_blocks


def precision_policy(precision: Any) -> MixedPrecisionPolicy | None:
    """The FSDP2 mixed-precision policy for a Trainer precision (None: full precision)."""
    dtype = getattr(precision, "dtype", None)
    if dtype not in (torch.bfloat16, torch.float16):
        return None
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


class FSDPStrategy(DTensorStrategy):
    """Shard parameters, gradients and optimizer state over the data-parallel ranks.

    Args:
        reshard_after_forward: free a block's gathered parameters after its forward
            (less memory, one more all-gather in backward) - FSDP2's default ``True``.
        cpu_offload: keep the sharded parameters, gradients and optimizer state in CPU
            memory (``CPUOffloadPolicy``); the optimizer step then runs on the CPU.
        reduce_strategy: ``"gradient_average"`` (mean over ranks) or ``"gradient_sum"``.
        mixed_precision: ``"auto"`` follows the Trainer's precision; ``False`` keeps
            parameters in float32 for compute too.

    >>> FSDPStrategy(cpu_offload=True)
    FSDPStrategy(reshard_after_forward=True, cpu_offload=True)
    """

    name = "fsdp"

    def __init__(
        self,
        *,
        reshard_after_forward: bool = True,
        cpu_offload: bool = False,
        reduce_strategy: str = "gradient_average",
        mixed_precision: bool | str = "auto",
        checkpoint: str = "full",
        timeout_s: float | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(checkpoint=checkpoint, timeout_s=timeout_s, backend=backend)
        for name, value in (
            ("reshard_after_forward", reshard_after_forward),
            ("cpu_offload", cpu_offload),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"fsdp option {name} must be true or false, got {value!r}")
        if mixed_precision not in (True, False, "auto"):
            raise ValueError(
                f"mixed_precision must be 'auto', true or false, got {mixed_precision!r}"
            )
        self.reshard_after_forward = reshard_after_forward
        self.cpu_offload = cpu_offload
        self.reduce_strategy = check_reduce_strategy(reduce_strategy)
        self.mixed_precision = mixed_precision
        self.precision: Any = None  # the Trainer's precision, when it hands it over
        self.mesh = None

    def fsdp_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "mesh": self.mesh,
            "reshard_after_forward": self.reshard_after_forward,
            "offload_policy": CPUOffloadPolicy() if self._offloading() else OffloadPolicy(),
        }
        policy = precision_policy(self.precision) if self.mixed_precision is not False else None
        if policy is not None:
            kwargs["mp_policy"] = policy
        return kwargs

    def _offloading(self) -> bool:
        """CPU offload moves shards from an accelerator to host memory; training on the
        CPU they already are there (torch's CPUOffloadPolicy then needs an accelerator)."""
        if self.cpu_offload and self.device.type == "cpu":
            import warnings

            warnings.warn(
                "fsdp cpu_offload has no effect when training on the CPU (the shards are "
                "already in host memory); it applies on GPUs",
                stacklevel=3,
            )
            self.cpu_offload = False
        return self.cpu_offload

    def setup_model(self, model: nn.Module) -> nn.Module:
        """Shard each block, then the root, over a 1-D mesh of all ranks."""
        self._require_group()
        self._require_trainable(model, "fsdp")
        if not self.cpu_offload:
            model = model.to(self.device)
        self.mesh = init_device_mesh(self.device.type, (self.world_size,), mesh_dim_names=("dp",))
        shard_model(model, self.fsdp_kwargs())
        self._apply_reduce_strategy(model)
        self._model = model
        return model

    def _apply_reduce_strategy(self, model: nn.Module) -> None:
        if self.reduce_strategy == "gradient_sum":
            for module in model.modules():
                if isinstance(module, FSDPModule):
                    module.set_gradient_divide_factor(1.0)

    @contextlib.contextmanager
    def no_backward_sync(self, model: nn.Module, enabled: bool) -> Iterator[None]:
        """While accumulating, keep unsharded local gradients (no reduce-scatter)."""
        target = self._model if self._model is not None else model
        if not enabled or not isinstance(target, FSDPModule):
            yield
            return
        target.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            target.set_requires_gradient_sync(True)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(reshard_after_forward={self.reshard_after_forward}, "
            f"cpu_offload={self.cpu_offload})"
        )


def shard_model(model: nn.Module, fsdp_kwargs: dict[str, Any]) -> nn.Module:
    """``fully_shard`` every block of ``model``, then ``model`` itself (in place)."""
    for _, block in find_blocks(model):
        if any(p.requires_grad for p in block.parameters()):
            fully_shard(block, **fsdp_kwargs)
    fully_shard(model, **fsdp_kwargs)
    return model
