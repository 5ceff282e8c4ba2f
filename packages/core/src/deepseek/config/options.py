"""A component's options checked against the signature of what builds it.

The options of a model, optimizer, scheduler, loss, callback, precision or strategy are
declared once, by the class or function itself: its parameters, type hints and
defaults. A config's ``{name: X, key: value}`` is checked against them, so errors name
the key path and the accepted names, and ``lr: fast`` fails before training starts.

>>> import torch
>>> check_options(torch.optim.lr_scheduler.StepLR, {"step_size": 2, "gamma": 0.5},
...               "scheduler", skip=("optimizer",))
{'step_size': 2, 'gamma': 0.5}
>>> check_options(torch.optim.lr_scheduler.StepLR, {"step_size": 2, "gamma": "big"},
...               "scheduler", skip=("optimizer",))
Traceback (most recent call last):
...
deepseek.config.errors.ConfigError: scheduler.gamma: 'big' (str) is not a number; ...
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from deepseek.config.errors import ConfigError
from deepseek.config.schema import convert
from deepseek.config.trainer_options import yaml_type


def parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """``fn``'s parameters, or None when it has no inspectable signature."""
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    fn = inspect.unwrap(fn)  # a registry factory wrapped with the signature of its class
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to defaults
        return {}


def accepts_kwargs(fn: Callable[..., Any]) -> bool:
    params = parameters(fn)
    return params is None or any(p.kind is p.VAR_KEYWORD for p in params.values())


def check_options(
    fn: Callable[..., Any],
    options: Mapping[str, Any],
    path: str,
    *,
    skip: Iterable[str] = (),
    what: str | None = None,
) -> dict[str, Any]:
    """``options`` checked (and converted: int -> float ...) against ``fn``'s signature.

    ``skip`` names parameters the caller passes itself (``params``, ``optimizer``,
    ``backend``): setting one in the config is an error.
    """
    params = parameters(fn)
    if params is None:
        return dict(options)
    skip = set(skip) | {"self"}
    name = what or getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
    variadic = any(p.kind is p.VAR_KEYWORD for p in params.values())
    settable = [
        n
        for n, p in params.items()
        if n not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    hints = type_hints(fn)
    checked: dict[str, Any] = {}
    for key, value in options.items():
        key_path = f"{path}.{key}"
        if key in skip:
            raise ConfigError(f"{key_path}: set by the framework, not by the config; remove it")
        if key not in settable:
            if variadic:
                checked[key] = value
                continue
            import difflib

            close = difflib.get_close_matches(key, settable, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{key_path}: not accepted by {name}.{hint} It accepts: "
                f"{', '.join(settable) or '(no options)'}"
            )
        checked[key] = _check_value(params[key], hints.get(key), value, key_path)
    missing = [
        n
        for n in settable
        if params[n].default is inspect.Parameter.empty
        and params[n].kind
        in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and n not in options
    ]
    if missing:
        raise ConfigError(
            f"{path}: {name} needs {', '.join(map(repr, missing))}; add "
            + ", ".join(f"{m}: ..." for m in missing)
        )
    return checked


def _check_value(param: inspect.Parameter, hint: Any, value: Any, path: str) -> Any:
    if hint is not None:
        reduced = yaml_type(hint)
        if reduced is not Any:
            return convert(reduced, value, path)
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return value
    if isinstance(default, bool):
        return convert(bool, value, path)
    if isinstance(default, float):
        return convert(float, value, path)
    if isinstance(default, int):
        return convert(int | float, value, path)
    return value
