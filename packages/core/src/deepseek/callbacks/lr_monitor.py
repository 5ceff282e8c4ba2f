"""LearningRateMonitor: put the learning rate of each parameter group into the metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deepseek.callbacks.base import Callback

if TYPE_CHECKING:
    from deepseek.training import Trainer


class LearningRateMonitor(Callback):
    """Logs ``lr`` (first group) and ``lr-group{i}`` (others) before every optimizer step,
    so loggers such as ``CSVLogger`` record the schedule."""

    def on_before_optimizer_step(self, trainer: Trainer, optimizer: Any) -> None:
        for i, group in enumerate(optimizer.param_groups):
            trainer.metrics["lr" if i == 0 else f"lr-group{i}"] = float(group["lr"])

    def on_fit_start(self, trainer: Trainer) -> None:
        self.on_before_optimizer_step(trainer, trainer.optimizer)
