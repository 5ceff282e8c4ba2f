"""Activation (gradient) checkpointing: trade compute for memory.

A checkpointed region keeps only its inputs during the forward pass and runs again during
backward to rebuild the activations it needs. Everything here composes
``torch.utils.checkpoint`` (non-reentrant, RNG state preserved, so dropout gives the same
gradients as without checkpointing).

- :func:`checkpoint` checkpoints one function call.
- :func:`checkpoint_wrapper` makes a module checkpoint itself on every call.
- :func:`apply_activation_checkpointing` wraps the submodules a policy picks, in place. It
  is the single entry point behind ``Trainer(gradient_checkpointing=...)``.

``selective=True`` switches to selective recompute: outputs of matmul-like ops (the
expensive ones) are stored, everything else (activations, norms, dropout, ...) is
recomputed. A stored output must not be modified in place (``nn.ReLU(inplace=True)`` right
after a ``Linear``): torch then stops backward with "Tensor cached during selective
activation checkpoint has been mutated"; use full recompute for such modules.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils import checkpoint as _torch_checkpoint
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

__all__ = [
    "ActivationCheckpointPolicy",
    "CheckpointWrapper",
    "apply_activation_checkpointing",
    "checkpoint",
    "checkpoint_sequential",
    "checkpoint_wrapper",
]

# Ops whose outputs selective recompute keeps: they cost far more to recompute than to
# store. Composite ops (linear, matmul, scaled_dot_product_attention) are listed too so the
# set still works where they are not decomposed; names missing from this torch are skipped.
_SAVED_OP_NAMES = (
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "linear",
    "matmul",
    "convolution",
    "scaled_dot_product_attention",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)


@functools.cache
def _saved_ops() -> frozenset:
    return frozenset(
        getattr(torch.ops.aten, name) for name in _SAVED_OP_NAMES if hasattr(torch.ops.aten, name)
    )


def _selective_policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    packet = getattr(op, "overloadpacket", op)
    if packet in _saved_ops():
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _selective_context() -> tuple[Any, Any]:
    return create_selective_checkpoint_contexts(_selective_policy)


def checkpoint(
    fn: Callable[..., Any],
    *args: Any,
    use_reentrant: bool = False,
    selective: bool = False,
    **kwargs: Any,
) -> Any:
    """Run ``fn(*args, **kwargs)`` without keeping its activations; recompute them in backward.

    A thin layer over :func:`torch.utils.checkpoint.checkpoint` that defaults to the
    non-reentrant implementation. Keyword arguments torch's checkpoint understands
    (``preserve_rng_state``, ``context_fn``, ``determinism_check``, ``debug``) go to it; the
    rest go to ``fn``. ``selective=True`` stores matmul-like outputs and recomputes the rest.

    Example:
        >>> import torch, deepseek as ds
        >>> layer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU())
        >>> x = torch.randn(2, 4, requires_grad=True)
        >>> ds.autograd.checkpoint(layer, x).sum().backward()
        >>> x.grad.shape
        torch.Size([2, 4])
    """
    if not callable(fn):
        raise TypeError(f"checkpoint needs a callable as its first argument, got {type(fn)!r}")
    if selective:
        if use_reentrant:
            raise ValueError(
                "selective=True needs the non-reentrant checkpoint; drop use_reentrant=True"
            )
        if "context_fn" in kwargs:
            raise ValueError(
                "pass either selective=True or your own context_fn to checkpoint, not both"
            )
        kwargs["context_fn"] = _selective_context
    return _torch_checkpoint.checkpoint(fn, *args, use_reentrant=use_reentrant, **kwargs)


def checkpoint_sequential(
    functions: nn.Sequential | list[Callable[..., Any]],
    segments: int,
    input: torch.Tensor,
    *,
    use_reentrant: bool = False,
    **kwargs: Any,
) -> Any:
    """:func:`torch.utils.checkpoint.checkpoint_sequential`, non-reentrant by default.

    Splits ``functions`` into ``segments`` chunks and checkpoints each but the last.

    Example:
        >>> import torch, deepseek as ds
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(4)])
        >>> ds.autograd.checkpoint_sequential(net, 2, torch.randn(2, 4)).shape
        torch.Size([2, 4])
    """
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"segments must be a positive int, got {segments!r}")
    return _torch_checkpoint.checkpoint_sequential(
        functions, segments, input, use_reentrant=use_reentrant, **kwargs
    )


class CheckpointWrapper(nn.Module):
    """Runs the wrapped module under :func:`checkpoint` whenever gradients are enabled.

    The wrapper is invisible to checkpoints: ``state_dict`` and ``load_state_dict`` use the
    wrapped module's keys (no ``module.`` prefix), so a state dict saved with or without
    checkpointing loads into either. Unknown attributes are looked up on the wrapped module.
    """

    def __init__(self, module: nn.Module, selective: bool = False) -> None:
        super().__init__()
        self.module = module
        self.selective = selective
        self.register_state_dict_post_hook(_strip_wrapper_prefix)
        self.register_load_state_dict_pre_hook(_add_wrapper_prefix)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # Without autograd there is nothing to save, so checkpointing would only cost time.
        if not torch.is_grad_enabled():
            return self.module(*args, **kwargs)
        return checkpoint(self.module, *args, selective=self.selective, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "module" not in modules:  # half-built (e.g. while unpickling)
                raise
            return getattr(modules["module"], name)

    def extra_repr(self) -> str:
        return "selective=True" if self.selective else ""


def _strip_wrapper_prefix(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    inner = prefix + "module."
    # This module's keys were the last ones added, so re-inserting them keeps the order.
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)


def _add_wrapper_prefix(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + "module." + key[len(prefix) :]] = state_dict.pop(key)


def checkpoint_wrapper(module: nn.Module, selective: bool = False) -> nn.Module:
    """Return ``module`` wrapped so that each call runs under activation checkpointing.

    Wrapping an already wrapped module returns it unchanged. State dict keys are those of
    the unwrapped module.

    Example:
        >>> import torch, deepseek as ds
        >>> block = ds.nn.checkpoint_wrapper(torch.nn.Linear(4, 4))
        >>> list(block.state_dict())
        ['weight', 'bias']
        >>> block(torch.randn(2, 4)).sum().backward()
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"checkpoint_wrapper needs an nn.Module, got {type(module)!r}")
    if isinstance(module, CheckpointWrapper):
        return module
    if _has_no_forward(module):
        raise TypeError(
            f"{type(module).__name__} has no forward() and cannot be checkpointed; "
            "wrap the modules it contains instead"
        )
    return CheckpointWrapper(module, selective=selective)


def _has_no_forward(module: nn.Module) -> bool:
    # ModuleList, ModuleDict and friends are containers only; calling them raises.
    return type(module).forward is nn.Module.forward


ModuleFilter = Callable[[str, nn.Module], bool]


@dataclasses.dataclass(frozen=True)
class ActivationCheckpointPolicy:
    """Which submodules :func:`apply_activation_checkpointing` wraps.

    Every criterion that is set must hold (they combine with AND):

    - ``module_types``: module classes, or class names as strings (handy in YAML configs).
    - ``name_pattern``: a glob (``fnmatch``) over qualified module names such as
      ``"encoder.layers.*"``, or a compiled ``re.Pattern`` that must match the whole name.
    - ``every_n``: ``k`` picks children ``0, k, 2k, ...`` of each *block stack*, an
      ``nn.ModuleList``/``nn.Sequential`` of two or more same-class blocks (modules that
      have submodules) not itself inside another stack. ``every_n=1`` is every block.
    - ``predicate``: ``(qualified_name, module) -> bool``.

    ``selective=True`` stores matmul outputs and recomputes the rest inside each wrapped
    module. Build one from a plain value with :meth:`from_value`.

    Example:
        >>> import torch, deepseek as ds
        >>> policy = ds.nn.ActivationCheckpointPolicy(every_n=2, selective=True)
        >>> ds.nn.ActivationCheckpointPolicy.from_value({"every_n": 2, "selective": True}) == policy
        True
    """

    module_types: tuple[type | str, ...] = ()
    name_pattern: str | re.Pattern[str] | None = None
    every_n: int | None = None
    predicate: ModuleFilter | None = None
    selective: bool = False

    def __post_init__(self) -> None:
        types = self.module_types
        types = (types,) if isinstance(types, (type, str)) else tuple(types)
        for t in types:
            if not (isinstance(t, str) or (isinstance(t, type) and issubclass(t, nn.Module))):
                raise TypeError(
                    f"module_types entries must be nn.Module subclasses or class names, got {t!r}"
                )
        object.__setattr__(self, "module_types", types)
        if self.name_pattern is not None and not isinstance(self.name_pattern, (str, re.Pattern)):
            raise TypeError(
                f"name_pattern must be a glob string or a compiled re.Pattern, "
                f"got {type(self.name_pattern).__name__}"
            )
        if self.every_n is not None and (
            isinstance(self.every_n, bool) or not isinstance(self.every_n, int) or self.every_n < 1
        ):
            raise ValueError(f"every_n must be a positive int, got {self.every_n!r}")
        if self.predicate is not None and not callable(self.predicate):
            raise TypeError(f"predicate must be callable, got {type(self.predicate).__name__}")
        if not isinstance(self.selective, bool):
            raise TypeError(f"selective must be True or False, got {self.selective!r}")
        if not (types or self.name_pattern is not None or self.every_n or self.predicate):
            raise ValueError(
                "ActivationCheckpointPolicy needs at least one of module_types, name_pattern, "
                "every_n or predicate"
            )

    @classmethod
    def from_value(cls, value: PolicyLike) -> ActivationCheckpointPolicy:
        """Build a policy from what a user or a config passes.

        ``True``: every block of every block stack (``every_n=1``); ``int`` k: every k-th
        block; module class or tuple/list of classes: by type; ``str`` or ``re.Pattern``: by
        name; callable ``(name, module) -> bool``: custom; mapping: the fields by name
        (``{"every_n": 2, "selective": True}``); a policy is returned unchanged.
        """
        if isinstance(value, cls):
            return value
        if value is True:
            return cls(every_n=1)
        if isinstance(value, bool) or value is None:
            raise TypeError(
                f"{value!r} is not a checkpointing policy; to turn checkpointing off, "
                "do not apply it"
            )
        if isinstance(value, int):
            return cls(every_n=value)
        if isinstance(value, (str, re.Pattern)):
            return cls(name_pattern=value)
        if isinstance(value, type):
            return cls(module_types=(value,))
        if isinstance(value, (tuple, list)) and value and all(isinstance(v, type) for v in value):
            return cls(module_types=tuple(value))
        if isinstance(value, Mapping):
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - fields)
            if unknown:
                raise ValueError(
                    f"unknown activation checkpointing option(s) {unknown}; "
                    f"allowed: {sorted(fields)}"
                )
            return cls(**value)
        if callable(value):
            return cls(predicate=value)
        raise TypeError(
            f"cannot build an activation checkpointing policy from {type(value).__name__} "
            f"{value!r}; pass True, an int k (every k-th block), a module class or tuple of "
            "classes, a name pattern, a callable (name, module) -> bool, a mapping of "
            "ActivationCheckpointPolicy fields, or an ActivationCheckpointPolicy"
        )

    def _picks(self, name: str, module: nn.Module, in_stack_position: bool) -> bool:
        # in_stack_position: module is one of the every_n-selected blocks.
        if self.module_types and not any(_is_type(module, t) for t in self.module_types):
            return False
        if self.name_pattern is not None and not _name_matches(self.name_pattern, name):
            return False
        if self.every_n is not None and not in_stack_position:
            return False
        return self.predicate is None or bool(self.predicate(name, module))


PolicyLike = (
    ActivationCheckpointPolicy
    | type[nn.Module]
    | tuple
    | list
    | str
    | re.Pattern
    | int
    | bool
    | ModuleFilter
    | Mapping
    | None
)


def _is_type(module: nn.Module, t: type | str) -> bool:
    if isinstance(t, str):
        return any(cls.__name__ == t for cls in type(module).__mro__)
    return isinstance(module, t)


def _name_matches(pattern: str | re.Pattern[str], name: str) -> bool:
    if isinstance(pattern, str):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern.fullmatch(name) is not None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_block_stack(module: nn.Module) -> bool:
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) < 2:
        return False
    blocks = [_unwrap(m) for m in module]
    first = type(blocks[0])
    return all(type(b) is first and next(b.children(), None) is not None for b in blocks)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, CheckpointWrapper) else module


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, block)`` for the children of each outermost block stack: an
    ``nn.ModuleList``/``nn.Sequential`` of two or more same-class modules that have children
    (transformer layers, residual stages). The unit activation checkpointing and FSDP wrap.

        >>> import torch
        >>> layers = torch.nn.ModuleList(
        ...     torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()) for _ in range(3)
        ... )
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> model.add_module("layers", layers)
        >>> [name for name, _ in find_blocks(model)]
        ['layers.0', 'layers.1', 'layers.2']
    """
    found: list[tuple[str, nn.Module]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        if _is_block_stack(module):
            found.extend((_join(prefix, name), _unwrap(m)) for name, m in module.named_children())
            return
        for name, child in module.named_children():
            if not isinstance(child, CheckpointWrapper):
                visit(child, _join(prefix, name))

    visit(model, "")
    return found


def _stack_positions(model: nn.Module, every_n: int) -> set[int]:
    """ids of children 0, k, 2k, ... of each outermost block stack."""
    picked: set[int] = set()

    def visit(module: nn.Module) -> None:
        if _is_block_stack(module):
            picked.update(id(_unwrap(m)) for i, m in enumerate(module) if i % every_n == 0)
            return
        for child in module.children():
            if not isinstance(child, CheckpointWrapper):
                visit(child)

    visit(model)
    return picked


def apply_activation_checkpointing(model: nn.Module, policy: PolicyLike = True) -> nn.Module:
    """Wrap the submodules ``policy`` picks with :func:`checkpoint_wrapper`, in place.

    ``policy`` is anything :meth:`ActivationCheckpointPolicy.from_value` accepts; the
    default ``True`` checkpoints every block of the model's block stacks (the layers of a
    transformer). Matching goes top-down: once a module is wrapped its descendants are
    not considered, already wrapped modules are left as they are, and the root module and
    containers without ``forward`` (``nn.ModuleList``) are never wrapped. Raises
    ``ValueError`` if the policy picks nothing. Returns ``model``.

    Example:
        >>> import torch, deepseek as ds
        >>> block = lambda: torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU())
        >>> model = torch.nn.Sequential(block(), block(), block())
        >>> model = ds.nn.apply_activation_checkpointing(model, 2)  # blocks 0 and 2
        >>> [type(m).__name__ for m in model]
        ['CheckpointWrapper', 'Sequential', 'CheckpointWrapper']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"apply_activation_checkpointing needs an nn.Module, got {type(model)!r}")
    resolved = ActivationCheckpointPolicy.from_value(policy)
    positions = _stack_positions(model, resolved.every_n) if resolved.every_n else set()
    matched = 0
    seen: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        nonlocal matched
        for name, child in list(parent.named_children()):
            qualified = _join(prefix, name)
            if isinstance(child, CheckpointWrapper):
                # Already checkpointed: count a match, but never wrap or look inside again.
                seen.append(f"{qualified} (checkpointed {type(child.module).__name__})")
                matched += resolved._picks(qualified, child.module, id(child.module) in positions)
                continue
            seen.append(f"{qualified} ({type(child).__name__})")
            if not _has_no_forward(child) and resolved._picks(
                qualified, child, id(child) in positions
            ):
                setattr(parent, name, CheckpointWrapper(child, selective=resolved.selective))
                matched += 1
            else:
                visit(child, qualified)

    visit(model, "")
    if not matched:
        shown = ", ".join(seen[:8]) + (f", ... ({len(seen) - 8} more)" if len(seen) > 8 else "")
        hint = (
            " (every_n and True need an nn.ModuleList/nn.Sequential of two or more same-class "
            "blocks)"
            if resolved.every_n
            else ""
        )
        raise ValueError(
            f"activation checkpointing policy {policy!r} matched no submodule of "
            f"{type(model).__name__}{hint}. Modules seen: {shown or 'none'}"
        )
    return model
