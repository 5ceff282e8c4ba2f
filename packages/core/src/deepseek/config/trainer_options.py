"""The ``trainer:`` section, derived from ``Trainer.__init__`` (declared once, there).

Every keyword argument of the Trainer becomes a key of the section with the Trainer's
own default and its type hint reduced to what YAML can express (``str | Backend`` ->
``str``, ``Mapping[str, Any]`` -> a mapping, callables dropped). A new Trainer argument
is therefore settable from YAML with no other edit. A few arguments take a YAML-shaped
value instead of a Python object:

============================ ================================================================
``precision``                a name or ``{name: fp16-mixed, loss_scale: 128}`` (name + options)
``strategy``                 a name or ``{name: ddp, <strategy options>}``
``loss`` (``loss_fn``)       a loss name (``cross_entropy``) or ``{name: ..., <kwargs>}`` or
                             ``module:callable``
``metrics``                  a list of metric names, ``{name: f1_macro}``, ``module:callable``
``gradient_checkpointing``   ``true``, ``selective``, ``every_n``, a name pattern, a list of
                             module class names, or a mapping of the policy's fields
``resume``, ...              ``Trainer.fit``'s own options (``resume: last``), derived too
============================ ================================================================

Arguments set in another section (``batch_size`` -> ``data.batch_size``, ``seed`` ->
top-level ``seed``, ...) are listed in :data:`deepseek.config.schema.SET_ELSEWHERE`.

>>> from deepseek.config.trainer_options import trainer_config_class
>>> TrainerConfig = trainer_config_class()
>>> TrainerConfig().accumulate_grad_batches
1
>>> TrainerConfig().precision
Component(name='auto', kwargs={})
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import os
import types
import typing
from typing import Any, Literal, Union

from deepseek.config.schema import SET_ELSEWHERE, AlgorithmConfig, Component

#: Trainer arguments whose YAML form differs from the Python one: YAML type and default
#: (``None`` means the Trainer's default, converted).
_YAML_FORM: dict[str, Any] = {
    "precision": Component,
    "strategy": Component,
    "metrics": list[Component] | None,
    "gradient_checkpointing": bool | int | str | list[str] | dict[str, Any],
}

#: YAML keys that feed a Trainer argument of another name: key -> (type, default).
_EXTRA_KEYS: dict[str, tuple[Any, Any]] = {
    "loss": (Component | None, None),
}

#: ``Trainer.fit`` arguments that are not the data: ``resume``, ``resume_weights_only``...
#: (derived from fit's signature like the constructor's).
_FIT_DATA = ("self", "train_data", "val_data")

_YAML_SCALARS = (bool, int, float, str, type(None))


def _trainer_class() -> type:
    from deepseek.training.trainer import Trainer

    return Trainer


def trainer_parameters() -> dict[str, inspect.Parameter]:
    """The Trainer's keyword arguments that the ``trainer`` section sets directly."""
    params = inspect.signature(_trainer_class().__init__).parameters
    return {
        name: p
        for name, p in params.items()
        if name != "self"
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and f"trainer.{name}" not in SET_ELSEWHERE
    }


def fit_parameters() -> dict[str, inspect.Parameter]:
    """``Trainer.fit``'s keyword arguments that the ``trainer`` section sets."""
    params = inspect.signature(_trainer_class().fit).parameters
    return {
        name: p
        for name, p in params.items()
        if name not in _FIT_DATA and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


@functools.cache
def trainer_config_class() -> type:
    """The ``TrainerConfig`` dataclass, built once from the Trainer's signature."""
    trainer = _trainer_class()
    try:
        hints = typing.get_type_hints(trainer.__init__)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: per-argument below
        hints = {}
    fields = []
    for name, param in trainer_parameters().items():
        hint = _YAML_FORM[name] if name in _YAML_FORM else yaml_type(hints.get(name, Any))
        default = param.default
        if default is inspect.Parameter.empty:
            fields.append((name, hint))
            continue
        default = _yaml_default(name, default)
        fields.append((name, hint, _field(default)))
    for name, (hint, default) in _EXTRA_KEYS.items():
        fields.append((name, hint, _field(default)))
    try:
        fit_hints = typing.get_type_hints(trainer.fit)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: unchecked
        fit_hints = {}
    taken = {f[0] for f in fields}
    for name, param in fit_parameters().items():
        if name in taken or param.default is inspect.Parameter.empty:
            continue
        hint = yaml_type(fit_hints.get(name, Any))
        fields.append((name, hint, _field(_yaml_default(name, param.default))))
    required = [f for f in fields if len(f) == 2]
    optional = [f for f in fields if len(f) == 3]
    cls = dataclasses.make_dataclass(
        "TrainerConfig",
        required + optional,
        namespace={
            "__doc__": "Every Trainer option, derived from Trainer.__init__ "
            "(see deepseek.config.trainer_options).",
            "__module__": "deepseek.config.schema",
        },
    )
    return cls


def _field(default: Any) -> Any:
    if isinstance(default, (list, dict, set, Component, AlgorithmConfig)):
        return dataclasses.field(default_factory=functools.partial(_copy, default))
    return dataclasses.field(default=default)


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


def _yaml_default(name: str, default: Any) -> Any:
    if name in ("precision", "strategy"):
        return Component(default if isinstance(default, str) else str(default))
    if isinstance(default, os.PathLike):
        return os.fspath(default)
    if isinstance(default, tuple):
        return list(default)
    return default


def yaml_type(hint: Any) -> Any:
    """``hint`` reduced to the values YAML can express; ``Any`` when nothing is left."""
    reduced = _reduce(hint)
    return Any if reduced is None else reduced


def _reduce(hint: Any) -> Any:
    if hint is Any or hint in _YAML_SCALARS:
        return hint
    if hint is os.PathLike or (isinstance(hint, type) and issubclass(hint, os.PathLike)):
        return str
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = []
        for option in typing.get_args(hint):
            reduced = _reduce(option)
            if reduced is Any:
                return Any
            if reduced is not None and reduced not in options:
                options.append(reduced)
        if not options or options == [type(None)]:
            return None
        return functools.reduce(lambda a, b: a | b, options) if len(options) > 1 else options[0]
    if origin is Literal:
        return hint
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence,
                  collections.abc.Iterable, collections.abc.Collection):  # fmt: skip
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            items = [_reduce(a) for a in args]
            if any(i is None for i in items):
                return None
            return tuple[tuple(items)]  # type: ignore[misc]
        item = _reduce(args[0]) if args else Any
        return None if item is None else list[item]  # type: ignore[valid-type]
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return dict[str, Any]
    return None  # classes, callables, tensors: not expressible in YAML
