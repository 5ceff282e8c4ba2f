"""Model wrappers, known by type: how to reach the user's module inside them.

The Trainer and strategies wrap a user's model (``DistributedDataParallel``,
``torch.compile``'s ``OptimizedModule``, activation-checkpoint wrappers, the Trainer's
own step dispatcher). ``unwrap`` walks through those wrappers by their *type*, never by
attribute names, so a user model that happens to have ``self.module = nn.Linear(...)``
is left alone. A strategy that adds a wrapper of its own registers its type once:

    >>> import torch
    >>> from deepseek.nn.wrappers import register_wrapper_type, unwrap
    >>> class MyWrapper(torch.nn.Module):
    ...     def __init__(self, inner):
    ...         super().__init__()
    ...         self.inner = inner
    >>> register_wrapper_type(MyWrapper, "inner")
    >>> user = torch.nn.Linear(2, 2)
    >>> unwrap(MyWrapper(torch.compile(user))) is user
    True
    >>> class Model(torch.nn.Module):      # an attribute named "module" is not a wrapper
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.module = torch.nn.Linear(2, 2)
    >>> model = Model()
    >>> unwrap(model) is model
    True

FSDP2's ``fully_shard`` does not wrap (it swaps the module's class in place), so a
sharded module is its own user module.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from torch import nn

# wrapper type -> function returning the wrapped module
_WRAPPERS: dict[type, Callable[[Any], nn.Module]] = {}


def register_wrapper_type(cls: type, inner: str | Callable[[Any], nn.Module]) -> None:
    """Declare ``cls`` a wrapper whose user module is ``getattr(w, inner)`` (or ``inner(w)``).

    Subclasses of ``cls`` count as the same wrapper. Registering again replaces the rule.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_wrapper_type needs a class, got {cls!r}")
    if isinstance(inner, str):
        name = inner
        _WRAPPERS[cls] = lambda wrapper: getattr(wrapper, name)
    elif callable(inner):
        _WRAPPERS[cls] = inner
    else:
        raise TypeError(f"inner must be an attribute name or a function, got {inner!r}")


def wrapper_types() -> tuple[type, ...]:
    """Every registered wrapper type."""
    _register_builtin()
    return tuple(_WRAPPERS)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside any chain of registered wrappers."""
    _register_builtin()
    while True:
        rule = _rule_for(type(model))
        if rule is None:
            return model
        inner = rule(model)
        if not isinstance(inner, nn.Module) or inner is model:
            return model
        model = inner


def is_wrapper(model: Any) -> bool:
    _register_builtin()
    return _rule_for(type(model)) is not None


def _rule_for(cls: type) -> Callable[[Any], nn.Module] | None:
    for klass in cls.__mro__:
        rule = _WRAPPERS.get(klass)
        if rule is not None:
            return rule
    return None


_builtin_done = False
_compile_done = False


def _register_builtin() -> None:
    """torch's wrappers, registered on first use (imports kept off ``import deepseek``)."""
    global _builtin_done, _compile_done
    # torch.compile's wrapper can exist only once dynamo is imported: look for it there
    # instead of importing dynamo (seconds of start-up in every distributed worker).
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    if not _compile_done and eval_frame is not None:
        _WRAPPERS.setdefault(eval_frame.OptimizedModule, lambda w: w._orig_mod)
        _compile_done = True
    if _builtin_done:
        return
    _builtin_done = True
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    _WRAPPERS.setdefault(DistributedDataParallel, lambda w: w.module)
    _WRAPPERS.setdefault(DataParallel, lambda w: w.module)
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel

        _WRAPPERS.setdefault(FullyShardedDataParallel, lambda w: w.module)
    except ImportError:  # pragma: no cover - torch without distributed
        pass
    try:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            ActivationWrapper,
        )

        _WRAPPERS.setdefault(ActivationWrapper, lambda w: w._checkpoint_wrapped_module)
    except ImportError:  # pragma: no cover
        pass
    from deepseek.nn.activation_checkpointing import CheckpointWrapper

    _WRAPPERS.setdefault(CheckpointWrapper, lambda w: w.module)
