"""What the DTensor strategies (``fsdp``, ``tp``, ``2d``) share: state dicts through
``torch.distributed.checkpoint.state_dict`` (gathered full state dicts, so a checkpoint
loads with any world size), the global gradient norm over shards, and the block finder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from deepseek.distributed.base import ProcessGroupStrategy
from deepseek.distributed.grad_norm import clip_grad_norm


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The repeated blocks of ``model``: children of each outermost block stack (an
    ``nn.ModuleList``/``nn.Sequential`` of two or more same-class modules with
    submodules), the rule activation checkpointing uses for ``every_n``.

    >>> import torch
    >>> block = lambda: torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ModuleList([block(), block()]))
    >>> [name for name, _ in find_blocks(net)]
    ['1.0', '1.1']
    """
    try:  # one rule for both: prefer core's public finder when it has one
        from deepseek.nn.activation_checkpointing import find_blocks as core_find_blocks
    except ImportError:
        core_find_blocks = None
    if core_find_blocks is not None:
        return list(core_find_blocks(model))
    from deepseek.nn.activation_checkpointing import _is_block_stack

    found: list[tuple[str, nn.Module]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        if _is_block_stack(module):
            found.extend((f"{prefix}{name}", child) for name, child in module.named_children())
            return
        for name, child in module.named_children():
            visit(child, f"{prefix}{name}.")

    visit(model, "")
    return found


class DTensorStrategy(ProcessGroupStrategy):
    """Base of strategies whose parameters are DTensors after ``setup_model``."""

    name = "dtensor"

    def __init__(
        self,
        *,
        checkpoint: str = "full",
        timeout_s: float | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(timeout_s=timeout_s, backend=backend)
        if checkpoint not in ("full", "sharded"):
            raise ValueError(f"checkpoint must be 'full' or 'sharded', got {checkpoint!r}")
        self.checkpoint = checkpoint
        self._model: nn.Module | None = None
        self._optimizers: list[torch.optim.Optimizer] = []
        self._loaded_sharded = False

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        self._optimizers.append(optimizer)
        return optimizer

    def _full(self, **extra: Any) -> StateDictOptions:
        return StateDictOptions(full_state_dict=True, cpu_offload=True, **extra)

    def _model_ref(self, model: nn.Module | None = None) -> nn.Module:
        found = self._model if self._model is not None else model
        if found is None:
            raise RuntimeError(f"{type(self).__name__}.setup_model must run first")
        return found

    # -- the step ------------------------------------------------------------------------
    def clip_gradients(
        self,
        model: nn.Module,
        max_norm: float,
        optimizers: Sequence[torch.optim.Optimizer] | None = None,
    ) -> torch.Tensor:
        """Clip by the norm over all shards (the same value on every rank)."""
        if optimizers:
            params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
        else:
            params = list(model.parameters())
        return clip_grad_norm(params, max_norm)

    # -- checkpoints: full (gathered) state dicts, loadable with any world size ----------
    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's weights (gathered; on rank 0 only, others get ``{}``); with
        ``checkpoint="sharded"``, ``{}`` (``save_checkpoint`` writes the shards)."""
        if self.checkpoint == "sharded":
            return {}
        state = get_model_state_dict(self._model_ref(model), options=self._full())
        return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}

    def load_model_state_dict(
        self, model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True
    ) -> None:
        if not state and self._loaded_sharded:
            return  # load_checkpoint already loaded the shards
        target = self._model_ref(model)
        expected = {
            k: tuple(v.shape)
            for k, v in get_model_state_dict(
                target, options=StateDictOptions(full_state_dict=False)
            ).items()
            if isinstance(v, torch.Tensor)
        }
        _check_shapes(target, state, expected, strict)
        set_model_state_dict(
            target, dict(state), options=StateDictOptions(full_state_dict=True, strict=strict)
        )

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if self.checkpoint == "sharded":  # hyper-parameters only; the moments go to shards
            groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
            return {"state": {}, "param_groups": groups, "sharded": True}
        return get_optimizer_state_dict(self._model_ref(), optimizer, options=self._full())

    def load_optimizer_state_dict(
        self, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        if state.get("sharded"):
            if not self._loaded_sharded:
                raise ValueError("a sharded optimizer state needs the strategy's load_checkpoint")
            return
        set_optimizer_state_dict(
            self._model_ref(), optimizer, state, options=StateDictOptions(full_state_dict=True)
        )

    def _sharded_state(self) -> dict[str, Any]:
        model = self._model_ref()
        state: dict[str, Any] = {"model": get_model_state_dict(model)}
        for i, opt in enumerate(self._optimizers):
            state[f"optim{i}"] = get_optimizer_state_dict(model, opt)
        return state

    def save_checkpoint(
        self,
        path: str | Path,
        model_state: Mapping[str, torch.Tensor],
        trainer_state: Mapping[str, Any] | None,
        metadata: Mapping[str, Any],
    ) -> Path:
        """``checkpoint="full"``: rank 0 writes core's format. ``"sharded"``: every rank
        writes its shards with torch.distributed.checkpoint
        (:mod:`deepseek.distributed.checkpoint`)."""
        if self.checkpoint != "sharded":
            return super().save_checkpoint(path, model_state, trainer_state, metadata)
        from deepseek.distributed.checkpoint import save_sharded

        return save_sharded(path, self._sharded_state(), trainer_state, metadata, self.rank)

    def load_checkpoint(self, path: str | Path) -> Any:
        """Core's loader; a sharded checkpoint's shards are loaded into the model and the
        optimizers here (resharded to this world size), after a shape check."""
        from deepseek import checkpoint as ckpt

        loaded = ckpt.load_checkpoint(path, map_location="cpu")
        if loaded.kind != "sharded":
            self._loaded_sharded = False
            return loaded
        import torch.distributed.checkpoint as dcp

        from deepseek.distributed.checkpoint import SHARDS, check_compatible

        model = self._model_ref()
        shapes = {
            f"model.{k}": tuple(v.shape)
            for k, v in get_model_state_dict(model).items()
            if isinstance(v, torch.Tensor)
        }
        check_compatible(loaded.path, shapes)
        state = self._sharded_state()
        dcp.load(state, checkpoint_id=str(Path(loaded.path) / SHARDS))
        set_model_state_dict(model, state["model"])
        for i, opt in enumerate(self._optimizers):
            set_optimizer_state_dict(model, opt, state[f"optim{i}"])
        self._loaded_sharded = True
        return loaded


def _check_shapes(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    local: Mapping[str, tuple[int, ...]],
    strict: bool,
) -> None:
    """Compare a full state dict with the model's full parameter shapes before any
    collective, so a mismatch is one clear error on every rank instead of a hang."""
    full_shapes = {}
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        full_shapes[name] = tuple(getattr(tensor, "shape", ()))
    bad = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {full_shapes[k]}"
        for k, v in state.items()
        if k in full_shapes and tuple(v.shape) != full_shapes[k]
    ]
    missing = sorted(set(local) - set(state)) if strict else []
    if bad or missing:
        details = "; ".join(bad[:5]) + (f"; missing keys {missing[:5]}" if missing else "")
        raise ValueError(
            f"the checkpoint does not fit {type(model).__name__}: {details}. Resume with the "
            "model configuration that wrote it, or load matching weights only"
        )
