"""``ExpertParallelStrategy`` (name ``expert``): expert parallelism x data parallelism.

The world is a 2-D mesh ``(dp, ep)`` (``torch.distributed.device_mesh``). Every rank
trains on its own batches (data parallel over the whole world, as with ``ddp``); the MoE
layers' experts are sharded over the ``ep`` dimension and tokens reach them with
``all_to_all_single`` (:mod:`deepseek.moe.parallel`). Dense parameters (attention,
router, shared experts, embeddings) are averaged by DistributedDataParallel over all
ranks; expert shards are summed over ``dp`` (the ranks holding the same shard) and
divided by the world size, which is the same average. Checkpoints hold the full,
gathered experts and their optimizer state (Adam's moments), so they load in a single
process too, and a resumed run continues exactly.

Launch with torchrun::

    torchrun --nproc-per-node 4 train.py  # Trainer(strategy={"name": "expert",
                                          #                  "expert_parallel_size": 2})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deepseek.moe.balancing import moe_layers
from deepseek.moe.parallel import expert_parameter_names, shard_experts

try:
    from deepseek.distributed.ddp import DDPStrategy

    _MISSING_DIST: str | None = None
except ImportError as exc:  # the module stays importable (docs, doctests) without dist
    DDPStrategy = object  # type: ignore[assignment,misc]
    _MISSING_DIST = str(exc)


class ExpertParallelStrategy(DDPStrategy):  # type: ignore[misc,valid-type]
    """Experts sharded over ``expert_parallel_size`` ranks (default: the whole world),
    data parallel over the rest. Other options are deepseek-dist's ``DDPStrategy``'s::

        strategy = ExpertParallelStrategy(expert_parallel_size=2)
        trainer = ds.Trainer(model, ..., strategy=strategy)   # under torchrun
    """

    name = "expert"

    def __init__(self, expert_parallel_size: int | None = None, **ddp_options: Any) -> None:
        if _MISSING_DIST is not None:
            raise ImportError(
                "the expert strategy needs the deepseek-dist package (process groups and DDP "
                f"for the data-parallel dimension): pip install deepseek-dist ({_MISSING_DIST})"
            )
        if expert_parallel_size is not None and (
            isinstance(expert_parallel_size, bool)
            or not isinstance(expert_parallel_size, int)
            or expert_parallel_size < 1
        ):
            raise ValueError(
                f"expert_parallel_size must be a positive int or None, got {expert_parallel_size!r}"
            )
        super().__init__(**ddp_options)
        self.expert_parallel_size = expert_parallel_size
        self.mesh: Any = None
        self.ep_group: Any = None
        self.dp_group: Any = None
        self._expert_names: list[str] = []
        self._expert_params: list[nn.Parameter] = []

    @property
    def ep_size(self) -> int:
        return self.expert_parallel_size or self.world_size

    def setup(self, backend: Any) -> None:
        super().setup(backend)
        world, ep = self.world_size, self.ep_size
        if world % ep:
            raise ValueError(
                f"expert_parallel_size ({ep}) must divide the world size ({world}): the mesh "
                "is (world / expert_parallel_size) x expert_parallel_size"
            )
        from torch.distributed.device_mesh import init_device_mesh

        self.mesh = init_device_mesh(
            self.device.type, (world // ep, ep), mesh_dim_names=("dp", "ep")
        )
        self.ep_group = self.mesh.get_group("ep")
        self.dp_group = self.mesh.get_group("dp")

    def setup_model(self, model: nn.Module) -> nn.Module:
        """Shard the experts over ``ep``, sync replicas over ``dp``, wrap the rest in DDP."""
        self._require_group()
        if not moe_layers(model):
            raise ValueError(
                f"the expert strategy needs a model with deepseek.moe.MoELayer layers; "
                f"{type(model).__name__} has none (use strategy='ddp')"
            )
        model = model.to(self.device)
        inner = self.unwrap(model)  # the user's model inside the Trainer's step dispatcher
        prefix = next((f"{n}." for n, m in model.named_modules() if m is inner and n), "")
        ep = self.ep_size
        if ep > 1:
            self._expert_names = shard_experts(inner, self.ep_group)
        else:
            self._expert_names = expert_parameter_names(inner)
        params = dict(inner.named_parameters())
        self._expert_params = [params[name] for name in self._expert_names]
        dp_size = self.world_size // ep
        for name in self._expert_names:
            param = params[name]
            if dp_size > 1:  # replicas of a shard start equal
                src = dist.get_global_rank(self.dp_group, 0)
                dist.broadcast(param.data, src=src, group=self.dp_group)
            param.register_hook(self._average_expert_gradient)
        # The per-step load counters are per rank (summed by the balancing callback):
        # DDP must neither sync the experts nor broadcast those buffers.
        ignored = [prefix + name for name in self._expert_names]
        ignored += [n for n, _ in model.named_buffers() if n.endswith("load_since_update")]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
        return super().setup_model(model)

    def _average_expert_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        if self.world_size // self.ep_size > 1:
            grad = grad.clone()
            dist.all_reduce(grad, group=self.dp_group)
        if self.reduce_strategy == "gradient_sum":
            return grad
        return grad / self.world_size

    # -- the step: one clipping coefficient for the whole (sharded) model ---------------
    def clip_gradients(
        self,
        model: nn.Module,
        max_norm: float,
        optimizers: Sequence[torch.optim.Optimizer] | None = None,
    ) -> torch.Tensor:
        """Clip by the 2-norm of the whole model's gradient. Each rank holds only its
        experts' gradients, so their squared norms are summed over ``ep``; a rank-local
        norm would give each rank its own coefficient and the dense replicas would drift
        apart."""
        if optimizers:
            params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
        else:
            params = list(model.parameters())
        if self.ep_size == 1:
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        experts = {id(p) for p in self._expert_params}
        with_grad = [p for p in params if p.grad is not None]

        def squared(grads: list[torch.Tensor]) -> torch.Tensor:
            total = torch.zeros((), device=self.device, dtype=torch.float32)
            for grad in grads:
                total = total + grad.detach().float().pow(2).sum()
            return total

        expert_sq = squared([p.grad for p in with_grad if id(p) in experts])
        dist.all_reduce(expert_sq, group=self.ep_group)
        dense_sq = squared([p.grad for p in with_grad if id(p) not in experts])
        norm = (dense_sq + expert_sq).sqrt()
        torch.nn.utils.clip_grads_with_norm_(with_grad, max_norm, norm)
        return norm

    # -- checkpoints: full experts, as a single process has them --------------------------
    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state = self.unwrap(model).state_dict()
        if self.ep_size > 1:
            for name in self._expert_names:
                shard = state[name].contiguous()
                parts = [torch.empty_like(shard) for _ in range(self.ep_size)]
                dist.all_gather(parts, shard, group=self.ep_group)
                state[name] = torch.cat(parts)
        return state

    def load_model_state_dict(
        self, model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True
    ) -> None:
        if self.ep_size > 1:
            state = dict(state)
            rank = dist.get_rank(self.ep_group)
            for name in self._expert_names:
                full = state[name]
                local = full.shape[0] // self.ep_size
                state[name] = full[rank * local : (rank + 1) * local]
        self.unwrap(model).load_state_dict(state, strict=strict)

    # -- optimizer state: the expert moments are sharded like the experts ---------------
    def _expert_state_ids(self, optimizer: torch.optim.Optimizer) -> dict[int, torch.Tensor]:
        """State-dict ids (positions over the param groups) of the expert parameters."""
        experts = {id(p) for p in self._expert_params}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return {i: p for i, p in enumerate(params) if id(p) in experts}

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer state with every expert tensor (Adam's moments, momentum) gathered
        over ``ep``, as a single process would hold it (each rank has its shard's only)."""
        state = optimizer.state_dict()
        if self.ep_size == 1:
            return state
        for index, param in self._expert_state_ids(optimizer).items():
            if index not in state["state"]:
                continue
            # A copy: state_dict() shares these dicts with the live optimizer state.
            entry = state["state"][index] = dict(state["state"][index])
            for key in sorted(entry):
                value = entry[key]
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    parts = [torch.empty_like(value) for _ in range(self.ep_size)]
                    dist.all_gather(parts, value.contiguous(), group=self.ep_group)
                    entry[key] = torch.cat(parts)
        return state

    def load_optimizer_state_dict(
        self, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        if self.ep_size > 1:
            rank = dist.get_rank(self.ep_group)
            state = {**state, "state": dict(state["state"])}
            for index, param in self._expert_state_ids(optimizer).items():
                entry = dict(state["state"].get(index, {}))
                full = (param.shape[0] * self.ep_size, *param.shape[1:])
                for key, value in entry.items():
                    if isinstance(value, torch.Tensor) and tuple(value.shape) == full:
                        local = param.shape[0]
                        entry[key] = value[rank * local : (rank + 1) * local].clone()
                if entry:
                    state["state"][index] = entry
        optimizer.load_state_dict(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(expert_parallel_size={self.expert_parallel_size})"
