"""Accumulating metrics: sufficient statistics summed over batches and ranks.

A :class:`Metric` keeps the statistics a metric needs (counts, sums, a confusion
vector) as tensors. ``update(preds, target)`` adds a batch, ``compute()`` reduces them
across processes (``all_reduce`` of the statistics when ``torch.distributed`` is
initialised, so every rank must call it) and returns the value over everything seen,
``reset()`` starts again. Averaging per-batch values instead is wrong for F1, AUROC and
perplexity, and weights uneven last batches wrongly even for accuracy.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "FunctionMetric",
    "Metric",
    "MetricCollection",
    "MetricUnavailable",
    "as_predictions",
    "is_metric",
]


class MetricUnavailable(ValueError):
    """A metric cannot be computed from what the model returned; the message says why."""


class Metric:
    """Base class. Subclasses list their summed statistics in ``_sum_states`` (tensors
    of a fixed shape on every rank), set them in :meth:`reset`, add to them in
    :meth:`update` and read them in :meth:`_compute`.

    >>> import torch
    >>> from deepseek.metrics import Accuracy
    >>> acc = Accuracy()
    >>> acc.update(torch.tensor([[2.0, 0.1], [0.3, 1.0]]), torch.tensor([0, 0]))
    >>> acc.update(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    >>> round(float(acc.compute()), 4)
    0.6667
    """

    name = "metric"
    higher_is_better = True
    _sum_states: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, preds: Any, target: Any) -> None:
        raise NotImplementedError

    def _compute(self, states: dict[str, torch.Tensor]) -> torch.Tensor | float:
        raise NotImplementedError

    def compute(self) -> torch.Tensor | float:
        """The value over every batch since :meth:`reset`, on every rank."""
        return self._compute(self._synced_states())

    def __call__(self, preds: Any, target: Any) -> torch.Tensor | float:
        """The value on this batch alone (the accumulated state is not touched)."""
        fresh = copy.copy(self)
        fresh.reset()
        fresh.update(preds, target)
        return fresh._compute(fresh._local_states())

    def _local_states(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._sum_states}

    def _synced_states(self) -> dict[str, torch.Tensor]:
        states = {name: getattr(self, name).clone() for name in self._sum_states}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for tensor in states.values():
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return states

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D (or N-D along dim 0) tensor of any length from every rank."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return tensor
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)])


def as_predictions(output: Any, metric: str) -> torch.Tensor:
    """The prediction tensor inside a model output (a tensor, ``.logits``, a dict with
    ``logits``/``preds``); MetricUnavailable saying why when there is none."""
    if isinstance(output, torch.Tensor):
        return output.detach()
    for key in ("logits", "preds", "predictions", "output"):
        value = output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value.detach()
    if output is None:
        why = "the model returned no output to score (only a loss?)"
    else:
        why = f"the model returned a {type(output).__name__} with no prediction tensor"
    raise MetricUnavailable(
        f"{metric}: {why}; return logits from forward (with loss_fn=) or a dict with 'logits'"
    )


def as_target(target: Any, metric: str) -> torch.Tensor:
    if not isinstance(target, torch.Tensor):
        raise MetricUnavailable(
            f"{metric}: needs a target tensor, got {type(target).__name__}; batches must be "
            "(inputs, target) or dicts with 'labels'"
        )
    return target.detach()


def is_metric(obj: Any) -> bool:
    """Whether ``obj`` is metric-like: ``update``, ``compute`` and ``reset`` (a
    deepseek Metric or a ``torchmetrics.Metric``)."""
    return all(callable(getattr(obj, m, None)) for m in ("update", "compute", "reset"))


class FunctionMetric(Metric):
    """A plain ``fn(preds, target) -> number`` scored per batch and averaged weighted by
    batch size (what a function can offer; prefer a Metric for F1, AUROC, ...)."""

    _sum_states = ("total", "count")

    def __init__(self, fn: Callable[[Any, Any], Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "metric")
        super().__init__()

    def reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    def update(self, preds: Any, target: Any) -> None:
        value = torch.as_tensor(self.fn(preds, target)).detach().double().cpu()
        if value.numel() != 1:
            raise MetricUnavailable(
                f"{self.name}: the function returned {value.numel()} values, not one number"
            )
        n = target.shape[0] if isinstance(target, torch.Tensor) and target.dim() else 1
        self.total += value.reshape(()) * n
        self.count += n

    def _compute(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        if states["count"] == 0:
            return torch.tensor(math.nan)
        return states["total"] / states["count"]

    def __repr__(self) -> str:
        return f"FunctionMetric({self.name})"


class MetricCollection:
    """Several metrics updated together; a metric that cannot be computed is warned
    about once (saying why) and skipped from then on, instead of failing the run.

    >>> import torch
    >>> from deepseek.metrics import MetricCollection, build_metrics
    >>> metrics = MetricCollection(build_metrics(["accuracy", "f1_macro"]))
    >>> metrics.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    >>> {k: round(v, 4) for k, v in metrics.compute().items()}
    {'accuracy': 0.5, 'f1_macro': 0.3333}
    """

    def __init__(self, metrics: Mapping[str, Any]) -> None:
        self.metrics = dict(metrics)
        self.disabled: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.metrics)

    def __iter__(self) -> Any:
        return iter(self.metrics)

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def update(self, preds: Any, target: Any) -> None:
        for name, metric in self.metrics.items():
            if name in self.disabled:
                continue
            try:
                metric.update(preds, target)
            except (MetricUnavailable, RuntimeError, ValueError, TypeError, IndexError) as exc:
                self._disable(name, str(exc))

    def compute(self) -> dict[str, float]:
        """Every metric over everything seen since :meth:`reset` (all ranks)."""
        results: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if name in self.disabled:
                continue
            try:
                value = metric.compute()
            except (MetricUnavailable, RuntimeError, ValueError) as exc:
                self._disable(name, str(exc))
                continue
            value = to_float(value)
            if value is None:
                self._disable(name, "it did not compute to a single number")
                continue
            results[name] = value
        return results

    def _disable(self, name: str, why: str) -> None:
        self.disabled[name] = why
        warnings.warn(f"metric {name!r} cannot be computed and is skipped: {why}", stacklevel=3)


def to_float(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        return float(value.detach().cpu().reshape(()).item())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
