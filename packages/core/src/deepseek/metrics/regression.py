"""Mean absolute and mean squared error over a whole epoch."""

from __future__ import annotations

from typing import Any

import torch

from deepseek.metrics.base import Metric, MetricUnavailable, as_predictions, as_target

__all__ = ["MAE", "MSE"]


def _pair(preds: Any, target: Any, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    preds = as_predictions(preds, metric)
    target = as_target(target, metric)
    if preds.shape != target.shape and preds.shape == (*target.shape, 1):
        preds = preds[..., 0]
    if preds.shape != target.shape and target.shape == (*preds.shape, 1):
        target = target[..., 0]
    if preds.shape != target.shape:
        raise MetricUnavailable(
            f"{metric}: predictions of shape {tuple(preds.shape)} differ from targets of "
            f"shape {tuple(target.shape)}"
        )
    return preds.double(), target.double()


class _ErrorSum(Metric):
    higher_is_better = False
    _sum_states = ("total", "count")

    def reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    def _error(self, diff: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, preds: Any, target: Any) -> None:
        preds, target = _pair(preds, target, self.name)
        self.total += self._error(preds - target).sum().cpu()
        self.count += target.numel()

    def _compute(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        if states["count"] == 0:
            raise MetricUnavailable(f"{self.name}: no samples were seen")
        return states["total"] / states["count"]


class MAE(_ErrorSum):
    """Mean absolute error over every element seen (``"mae"``)."""

    name = "mae"

    def _error(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.abs()


class MSE(_ErrorSum):
    """Mean squared error over every element seen (``"mse"``)."""

    name = "mse"

    def _error(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.square()
