"""Epoch-level metrics that accumulate over every batch (and every rank).

Each metric has ``update(preds, target)``, ``compute()`` and ``reset()``. The value is
computed over everything seen since the last reset, not averaged per batch: per-batch
averages of F1, AUROC or perplexity are a different (wrong) number. Under
``torch.distributed`` the sufficient statistics are summed across ranks in
``compute()`` (every rank must call it).

Built-in names: ``accuracy``, ``f1`` (binary for binary scores, else macro),
``f1_macro``, ``f1_micro``, ``auroc``, ``mae``, ``mse``, ``perplexity``. Plugins add
more through the ``deepseek_metrics`` hook. :func:`build_metrics` also accepts
``module:callable`` names (from YAML), metric objects, ``torchmetrics.Metric`` objects
(anything with update/compute/reset) and plain ``fn(preds, target)`` functions.

>>> import torch
>>> from deepseek.metrics import build_metrics
>>> metrics = build_metrics(["accuracy", "f1_macro"])
>>> for logits, target in [(torch.tensor([[3.0, 0.0]]), torch.tensor([0])),
...                        (torch.tensor([[0.0, 3.0], [3.0, 0.0]]), torch.tensor([0, 1]))]:
...     for m in metrics.values():
...         m.update(logits, target)
>>> {name: round(float(m.compute()), 4) for name, m in metrics.items()}
{'accuracy': 0.3333, 'f1_macro': 0.25}
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Iterable, Mapping
from typing import Any

from deepseek.metrics.base import (
    FunctionMetric,
    Metric,
    MetricCollection,
    MetricUnavailable,
    as_predictions,
    is_metric,
)
from deepseek.metrics.classification import AUROC, F1, Accuracy, F1Macro, F1Micro
from deepseek.metrics.regression import MAE, MSE
from deepseek.metrics.text import Perplexity

__all__ = [
    "AUROC",
    "BUILTIN_METRICS",
    "F1",
    "MAE",
    "MSE",
    "Accuracy",
    "F1Macro",
    "F1Micro",
    "FunctionMetric",
    "Metric",
    "MetricCollection",
    "MetricUnavailable",
    "Perplexity",
    "as_predictions",
    "build_metrics",
    "builtin_specs",
    "is_metric",
]

#: name -> (class path in this package, one-line description). One list: the plugin
#: records and the registry-free fallback are both built from it.
BUILTIN_METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("classification:Accuracy", "fraction of correct predictions"),
    "f1": ("classification:F1", "F1 (binary for binary scores, else macro over classes)"),
    "f1_macro": ("classification:F1Macro", "F1 averaged over classes"),
    "f1_micro": ("classification:F1Micro", "F1 from counts summed over classes"),
    "auroc": ("classification:AUROC", "area under the ROC curve (one-vs-rest macro)"),
    "mae": ("regression:MAE", "mean absolute error"),
    "mse": ("regression:MSE", "mean squared error"),
    "perplexity": ("text:Perplexity", "exp of the token-weighted mean cross-entropy"),
}


def builtin_specs() -> list[Any]:
    """Core's metrics as ``MetricSpec`` records (registered by core's plugin)."""
    from deepseek.plugins.specs import MetricSpec, deferred

    return [
        MetricSpec(name, deferred(f"deepseek.metrics.{target}"), description)
        for name, (target, description) in BUILTIN_METRICS.items()
    ]


def _builtin_class(name: str) -> type:
    import importlib

    module, _, attr = BUILTIN_METRICS[name][0].partition(":")
    return getattr(importlib.import_module(f"deepseek.metrics.{module}"), attr)


def metric_class(name: str, path: str = "metrics") -> Any:
    """The class (or factory) a metric name builds: the ``metric`` registry first (core's
    and plugins' metrics), the built-in list when the plugin system is unavailable."""
    try:
        from deepseek.plugins.registry import registry
        from deepseek.plugins.specs import implementation

        reg = registry("metric")
        if name in reg:
            return implementation(reg.get(name))
        known = reg.names()
    except (ImportError, ValueError, KeyError):
        known = []
    key = name.strip().lower()
    if key in BUILTIN_METRICS:
        return _builtin_class(key)
    known = sorted(set(known) | set(BUILTIN_METRICS))
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"{path}: unknown metric {name!r}.{hint} Known metrics: {', '.join(known)}; or "
        "name a 'module:callable', or pass a metric object"
    )


def build_metrics(
    specs: Any,
    *,
    config_dir: str | os.PathLike | None = None,
    safe: bool = False,
    path: str = "metrics",
) -> dict[str, Any]:
    """Metric objects by name from what a user or a config passes.

    ``specs``: a name, a list of names / ``{name: f1, average: micro}`` mappings /
    ``module:callable`` names / metric objects / ``fn(preds, target)`` functions, or a
    mapping ``{key: any of those}``. Returns ``{key: metric}``; each value has
    ``update(preds, target)``, ``compute()`` and ``reset()``.
    """
    if specs is None:
        return {}
    if isinstance(specs, Mapping) and "name" not in specs:
        items = [(str(k), v, f"{path}.{k}") for k, v in specs.items()]
    else:
        if isinstance(specs, (str, Mapping)) or is_metric(specs) or callable(specs):
            specs = [specs]
        if not isinstance(specs, Iterable):
            raise TypeError(f"{path}: expected metric names or objects, got {specs!r}")
        items = [(None, spec, f"{path}[{i}]") for i, spec in enumerate(specs)]
    metrics: dict[str, Any] = {}
    for key, spec, where in items:
        name, metric = _build_one(spec, where, config_dir=config_dir, safe=safe)
        key = key or name
        if key in metrics:
            raise ValueError(f"{where}: metric {key!r} is requested twice")
        metrics[key] = metric
    return metrics


def _build_one(
    spec: Any, path: str, *, config_dir: str | os.PathLike | None, safe: bool
) -> tuple[str, Any]:
    if is_metric(spec):
        return _key_of(spec), spec
    name, options = _name_and_options(spec, path)
    if name is None:
        if callable(spec):
            metric = FunctionMetric(spec)
            return metric.name, metric
        raise TypeError(
            f"{path}: {spec!r} is not a metric; pass a name (accuracy, f1, ...), "
            "'module:callable', a metric object or a function (preds, target) -> number"
        )
    if ":" in name:
        from deepseek.config.targets import import_target

        target = import_target(name, f"{path}.name", config_dir=config_dir, safe=safe)
        key = name.rpartition(":")[2].rpartition(".")[2]
        if inspect.isclass(target) or options:
            metric = _create(target, options, path)
        elif is_metric(target):
            metric = target
        elif callable(target):
            metric = FunctionMetric(target, name=key)
        else:
            raise TypeError(f"{path}.name: {name!r} is neither a metric nor callable")
        return key, metric
    return name.strip().lower(), _create(metric_class(name, f"{path}.name"), options, path)


def _create(factory: Any, options: dict[str, Any], path: str) -> Any:
    from deepseek.config.options import check_options

    options = check_options(factory, options, path)
    metric = factory(**options)
    if not is_metric(metric):
        raise TypeError(
            f"{path}: {factory!r} built a {type(metric).__name__}, which has no "
            "update/compute/reset; return a deepseek.metrics.Metric or a torchmetrics.Metric"
        )
    return metric


def _name_and_options(spec: Any, path: str) -> tuple[str | None, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"{path}: a metric given as a mapping needs a 'name' key")
        return name, options
    name = getattr(spec, "name", None)  # deepseek.config.Component
    kwargs = getattr(spec, "kwargs", None)
    if isinstance(name, str) and isinstance(kwargs, dict) and not callable(spec):
        return name, dict(kwargs)
    return None, {}


def _key_of(metric: Any) -> str:
    name = getattr(metric, "name", None)
    if isinstance(name, str) and name and name != "metric":
        return name
    return type(metric).__name__.lower()
