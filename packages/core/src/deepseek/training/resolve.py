"""Turning the Trainer's arguments (names, classes, dicts) into objects, once, in
``Trainer.__init__``: every bad value gets one error that says what to pass instead."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from deepseek import backends
from deepseek.callbacks.base import Callback
from deepseek.callbacks.model_checkpoint import ModelCheckpoint
from deepseek.plugins.registry import registry
from deepseek.training.precision import Precision
from deepseek.training.strategy import Strategy
from deepseek.utils.validation import check_positive_int  # noqa: F401 - re-exported

PRECISION_ALIASES = {
    "32": "fp32",
    "32-true": "fp32",
    "16": "fp16-mixed",
    "16-mixed": "fp16-mixed",
    "fp16": "fp16-mixed",
    "bf16": "bf16-mixed",
}
NAN_POLICIES = ("raise", "skip", None)
SCHEDULER_INTERVALS = ("step", "epoch")


def resolve_strategy(strategy: str | Strategy) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, str):
        return registry("strategy").create(strategy)
    raise TypeError(
        f"strategy must be a name like 'single' or a Strategy, got {type(strategy).__name__}"
    )


def resolve_precision(
    precision: str | Precision, backend: backends.Backend, options: Mapping[str, Any]
) -> Precision:
    if isinstance(precision, Precision):
        return precision
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a name or a Precision, got {precision!r}")
    name = PRECISION_ALIASES.get(precision.strip().lower(), precision.strip().lower())
    if name == "auto":
        name = backend.best_mixed_precision()
    spec = registry("precision").get(name)
    dtype = {"fp16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(spec.name)
    if dtype is not None and (note := backend.precision_note(dtype)):
        warnings.warn(f"precision={spec.name!r}: {note}", stacklevel=3)
    return spec.create(backend, **options)


def resolve_callbacks(callbacks: Iterable[Any]) -> list[Callback]:
    if isinstance(callbacks, (Callback, str, Mapping)):
        callbacks = [callbacks]
    resolved = []
    for cb in callbacks:
        if isinstance(cb, Callback):
            resolved.append(cb)
        elif isinstance(cb, str):
            resolved.append(registry("callback").create(cb))
        elif isinstance(cb, Mapping):
            options = dict(cb)
            if "name" not in options:
                raise ValueError(f"a callback given as a dict needs a 'name' key: {options}")
            resolved.append(registry("callback").create(options.pop("name"), **options))
        else:
            raise TypeError(
                f"callbacks must be Callback objects, names or {{name: ...}} dicts; "
                f"got {type(cb).__name__}"
            )
    # Checkpoints last (as Lightning orders them): a checkpoint written at a batch end
    # then holds every other callback's state for that batch (a logger's row, a monitor).
    return sorted(resolved, key=lambda cb: isinstance(cb, ModelCheckpoint))  # stable


def resolve_optimizer(
    optimizer: Any, kwargs: Mapping[str, Any] | None, model: nn.Module
) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        if kwargs:
            raise ValueError("optimizer_kwargs only apply when optimizer is a class")
        return optimizer
    if optimizer is None:
        raise ValueError(
            "an optimizer is required: pass an instance, or a class such as "
            "torch.optim.AdamW with optimizer_kwargs={'lr': 1e-3}"
        )
    if isinstance(optimizer, str):
        name = optimizer
        optimizer = getattr(torch.optim, name, None) or next(
            (getattr(torch.optim, n) for n in dir(torch.optim) if n.lower() == name.lower()), None
        )
        if not (inspect.isclass(optimizer) and issubclass(optimizer, torch.optim.Optimizer)):
            known = sorted(
                n
                for n in dir(torch.optim)
                if inspect.isclass(getattr(torch.optim, n))
                and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
                and n != "Optimizer"
            )
            raise ValueError(f"unknown optimizer {name!r}; torch.optim has: {', '.join(known)}")
    if not callable(optimizer):
        raise TypeError(f"optimizer must be an Optimizer or a class, got {optimizer!r}")
    kwargs = dict(kwargs or {})
    try:
        params = inspect.signature(optimizer).parameters
    except (TypeError, ValueError):
        params = {}
    if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            accepted = [p for p in params if p not in ("self", "params")]
            raise TypeError(
                f"{getattr(optimizer, '__name__', optimizer)} does not accept "
                f"{', '.join(map(repr, unknown))}; it accepts: {', '.join(accepted)}"
            )
    return optimizer([p for p in model.parameters() if p.requires_grad], **kwargs)


def resolve_scheduler(
    scheduler: Any, kwargs: Mapping[str, Any] | None, optimizer: torch.optim.Optimizer
) -> Any:
    if scheduler is None:
        return None
    if isinstance(scheduler, (torch.optim.lr_scheduler.LRScheduler,
                              torch.optim.lr_scheduler.ReduceLROnPlateau)):  # fmt: skip
        return scheduler
    if isinstance(scheduler, str):
        name = scheduler
        scheduler = getattr(torch.optim.lr_scheduler, name, None)
        if scheduler is None:
            raise ValueError(f"unknown scheduler {name!r}: use a torch.optim.lr_scheduler class")
    if callable(scheduler):
        try:
            return scheduler(optimizer, **dict(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"could not build scheduler {scheduler!r}: {exc}") from None
    raise TypeError(f"scheduler must be an LRScheduler, a class or a factory, got {scheduler!r}")


def resolve_metrics(metrics: Any) -> Any:
    """A ``deepseek.metrics.MetricCollection`` (accumulating metrics, computed over the
    whole validation set) from names, ``module:callable`` names, metric objects
    (``torchmetrics.Metric`` too) or ``fn(output, target)`` functions; None for none."""
    if metrics is None:
        return None
    from deepseek.metrics import MetricCollection, build_metrics

    built = build_metrics(metrics)
    return MetricCollection(built) if built else None


def __getattr__(name: str) -> Any:
    if name == "BUILTIN_METRICS":  # removed in 0.3: metrics live in deepseek.metrics
        warnings.warn(
            "deepseek.training.resolve.BUILTIN_METRICS is deprecated; use "
            "deepseek.metrics.build_metrics(names)",
            DeprecationWarning,
            stacklevel=2,
        )
        from deepseek.metrics import build_metrics

        return build_metrics(["accuracy"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
