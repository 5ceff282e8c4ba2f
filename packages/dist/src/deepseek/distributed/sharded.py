"""What the DTensor strategies (``fsdp``, ``tp``, ``2d``) share: state dicts through
``torch.distributed.checkpoint.state_dict`` (gathered full state dicts, so a checkpoint
loads with any world size), the global gradient norm over shards, and the block finder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

    def __init__(self, *, timeout_s: float | None = None, backend: str | None = None) -> None:
        super().__init__(timeout_s=timeout_s, backend=backend)
        self._model: nn.Module | None = None

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
        """The whole model's weights (gathered; on rank 0 only, others get ``{}``)."""
        state = get_model_state_dict(self._model_ref(model), options=self._full())
        return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}

    def load_model_state_dict(
        self, model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True
    ) -> None:
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
        return get_optimizer_state_dict(self._model_ref(), optimizer, options=self._full())

    def load_optimizer_state_dict(
        self, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        set_optimizer_state_dict(
            self._model_ref(), optimizer, state, options=StateDictOptions(full_state_dict=True)
        )


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
