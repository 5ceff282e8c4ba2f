"""Tensor parallelism (``tp``) and FSDP x TP on a 2-D mesh (``2d``), with
``torch.distributed.tensor.parallel.parallelize_module``.

A *plan* maps module-name patterns (``fnmatch`` globs over qualified names) to a style:
``colwise`` (``ColwiseParallel``: the weight's output features split over the ranks),
``rowwise`` (``RowwiseParallel``: input features split, outputs all-reduced) or
``sequence`` (``SequenceParallel``: norms/dropout on sequence shards). The classic MLP
plan is ``{"*.fc1": "colwise", "*.fc2": "rowwise"}``; a model ships its default plan as
a ``tp_plan`` attribute, so ``Trainer(strategy="tp")`` needs no plan argument.

    >>> plan = resolve_plan(None, TinyMLP())
    >>> [(name, type(style).__name__) for name, style in plan.items()][:2]
    [('blocks.0.fc1', 'ColwiseParallel'), ('blocks.1.fc1', 'ColwiseParallel')]
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from deepseek.distributed.base import check_reduce_strategy
from deepseek.distributed.fsdp import FSDPStrategy, precision_policy, shard_model
from deepseek.distributed.sharded import DTensorStrategy

STYLES: dict[str, type[ParallelStyle]] = {
    "colwise": ColwiseParallel,
    "rowwise": RowwiseParallel,
    "sequence": SequenceParallel,
}

PlanLike = Mapping[str, "str | ParallelStyle"]


def resolve_plan(plan: PlanLike | None, model: nn.Module) -> dict[str, ParallelStyle]:
    """Expand ``plan`` (or the model's ``tp_plan``) to ``{qualified name: style}``.

    Every pattern must match at least one submodule and every style must be known: one
    clear error otherwise (raised identically on every rank, before any collective).
    """
    source = "plan"
    if plan is None:
        plan = getattr(model, "tp_plan", None)
        source = f"{type(model).__name__}.tp_plan"
    if not plan:
        raise ValueError(
            f"tensor parallelism needs a plan: pass plan={{'<module pattern>': 'colwise' | "
            f"'rowwise' | 'sequence'}} or give {type(model).__name__} a tp_plan attribute"
        )
    if not isinstance(plan, Mapping):
        raise TypeError(f"{source} must be a mapping of module patterns to styles, got {plan!r}")
    names = [name for name, _ in model.named_modules() if name]
    resolved: dict[str, ParallelStyle] = {}
    for pattern, style in plan.items():
        if isinstance(style, str):
            key = style.strip().lower()
            if key not in STYLES:
                raise ValueError(
                    f"{source}[{pattern!r}]: unknown style {style!r}; use one of "
                    f"{', '.join(STYLES)}"
                )
            style_obj: ParallelStyle = STYLES[key]()
        elif isinstance(style, ParallelStyle):
            style_obj = style
        else:
            raise TypeError(f"{source}[{pattern!r}]: {style!r} is not a style name")
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
            raise ValueError(
                f"{source}: pattern {pattern!r} matches no submodule of "
                f"{type(model).__name__}; its modules are: {shown}"
            )
        for name in matched:
            resolved[name] = style_obj
    return resolved


def _check_divisible(model: nn.Module, plan: Mapping[str, ParallelStyle], tp: int) -> None:
    """Each colwise/rowwise Linear must split evenly over the tensor-parallel ranks."""
    for name, style in plan.items():
        module = model.get_submodule(name)
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            continue
        dim = 0 if isinstance(style, ColwiseParallel) else 1
        if isinstance(module, nn.Embedding):
            dim = 1 - dim
        size = module.weight.shape[dim]
        if isinstance(style, (ColwiseParallel, RowwiseParallel)) and size % tp:
            raise ValueError(
                f"tensor parallelism over {tp} ranks: {name} ({type(style).__name__}) splits "
                f"a dimension of size {size}, which {tp} does not divide"
            )


class TensorParallelStrategy(DTensorStrategy):
    """Split the planned layers' weights over all ranks (every rank sees the same batch).

    Args:
        plan: ``{module pattern: "colwise" | "rowwise" | "sequence"}``; default: the
            model's ``tp_plan`` attribute.
    """

    name = "tp"

    def __init__(
        self,
        *,
        plan: Mapping[str, str] | None = None,
        checkpoint: str = "full",
        timeout_s: float | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(checkpoint=checkpoint, timeout_s=timeout_s, backend=backend)
        self.plan = dict(plan) if plan is not None else None
        self.mesh = None

    @property
    def data_parallel(self) -> tuple[int, int]:
        """(number of data-parallel replicas, this rank's replica)."""
        return 1, 0

    def setup_dataloader(self, loader, *, shuffle: bool, seed: int, drop_last: bool = False):
        """Shard the data over the data-parallel replicas only: tensor-parallel peers must
        see the same batch."""
        from deepseek.training.data import EpochSampler, rebuild_dataloader

        replicas, replica = self.data_parallel
        sampler = EpochSampler(
            len(loader.dataset),
            shuffle=shuffle,
            seed=seed,
            num_replicas=replicas,
            rank=replica,
            drop_last=drop_last,
        )
        return rebuild_dataloader(loader, sampler)

    def _tp_size(self) -> int:
        return self.world_size

    def _parallelize(self, model: nn.Module, tp_mesh: Any) -> dict[str, ParallelStyle]:
        plan = resolve_plan(self.plan, model)
        _check_divisible(model, plan, tp_mesh.size())
        parallelize_module(model, tp_mesh, plan)
        return plan

    def setup_model(self, model: nn.Module) -> nn.Module:
        self._require_group()
        self._require_trainable(model, self.name)
        plan = resolve_plan(self.plan, model)  # errors before moving anything
        _check_divisible(model, plan, self._tp_size())
        model = model.to(self.device)
        self.mesh = init_device_mesh(self.device.type, (self.world_size,), mesh_dim_names=("tp",))
        parallelize_module(model, self.mesh, plan)
        self._model = model
        return model

    def reduce(self, value: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return super().reduce(value, op)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(plan={self.plan!r})"


class TwoDStrategy(TensorParallelStrategy):
    """FSDP over ``dp`` ranks x tensor parallelism over ``tp`` ranks (a 2-D DeviceMesh
    ``("dp", "tp")``): the layout for models too large for one device's memory even when
    sharded, and for many devices per node. ``dp * tp`` must equal the world size.

    >>> TwoDStrategy(tp=2)
    TwoDStrategy(dp=None, tp=2, plan=None)
    """

    name = "2d"

    def __init__(
        self,
        *,
        tp: int = 2,
        dp: int | None = None,
        plan: Mapping[str, str] | None = None,
        reshard_after_forward: bool = True,
        cpu_offload: bool = False,
        reduce_strategy: str = "gradient_average",
        mixed_precision: bool | str = "auto",
        checkpoint: str = "full",
        timeout_s: float | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(plan=plan, checkpoint=checkpoint, timeout_s=timeout_s, backend=backend)
        for key, value in (("tp", tp), ("dp", dp)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"2d strategy: {key} must be a positive int, got {value!r}")
        self.tp, self.dp = tp, dp
        self.reduce_strategy = check_reduce_strategy(reduce_strategy)
        # The FSDP half's options live in an FSDPStrategy (never set up itself).
        self._fsdp = FSDPStrategy(
            reshard_after_forward=reshard_after_forward,
            cpu_offload=cpu_offload,
            reduce_strategy=reduce_strategy,
            mixed_precision=mixed_precision,
        )
        self.precision: Any = None

    def mesh_shape(self, world_size: int) -> tuple[int, int]:
        """(dp, tp) for ``world_size`` ranks, or one clear error when they do not fit."""
        dp = self.dp if self.dp is not None else world_size // self.tp
        if dp * self.tp != world_size or dp < 1:
            raise ValueError(
                f"the 2d strategy needs dp x tp = {self.dp or '?'} x {self.tp} processes, but "
                f"{world_size} were launched; launch {max(dp, 1) * self.tp} processes "
                f"(e.g. --nproc-per-node {max(dp, 1) * self.tp}) or change tp/dp"
            )
        return dp, self.tp

    @property
    def data_parallel(self) -> tuple[int, int]:
        dp, tp = self.mesh_shape(self.world_size)
        return dp, self.rank // tp

    def _tp_size(self) -> int:
        return self.mesh_shape(self.world_size)[1]

    def setup(self, backend) -> None:
        super().setup(backend)
        self.mesh_shape(
            self.world_size
        )  # a bad layout fails here, on every rank, before any collective

    def setup_model(self, model: nn.Module) -> nn.Module:
        self._require_group()
        self._require_trainable(model, self.name)
        dp, tp = self.mesh_shape(self.world_size)
        plan = resolve_plan(self.plan, model)
        _check_divisible(model, plan, tp)
        model = model.to(self.device)
        self.mesh = init_device_mesh(self.device.type, (dp, tp), mesh_dim_names=("dp", "tp"))
        parallelize_module(model, self.mesh["tp"], plan)
        self._fsdp.mesh = self.mesh["dp"]
        self._fsdp.precision = self.precision
        shard_model(model, self._fsdp.fsdp_kwargs())
        self._fsdp._apply_reduce_strategy(model)
        self._fsdp._model = model
        self._model = model
        return model

    def no_backward_sync(self, model: nn.Module, enabled: bool):
        return self._fsdp.no_backward_sync(model, enabled)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dp={self.dp}, tp={self.tp}, plan={self.plan!r})"


__all__ = [
    "STYLES",
    "TensorParallelStrategy",
    "TwoDStrategy",
    "precision_policy",
    "resolve_plan",
]


class TinyMLP(nn.Module):
    """A two-block MLP with a ``tp_plan`` (used by the docs' examples and the tests)."""

    tp_plan = {"blocks.*.fc1": "colwise", "blocks.*.fc2": "rowwise"}

    def __init__(self, width: int = 8, hidden: int = 16, out: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_MLPBlock(width, hidden) for _ in range(2))
        self.head = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class _MLPBlock(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.tanh(self.fc1(x)))
