"""EarlyStopping: end the fit when a monitored metric stops improving."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from deepseek.callbacks.base import Callback
from deepseek.utils.validation import check_positive_int

if TYPE_CHECKING:
    from deepseek.training import Trainer


class EarlyStopping(Callback):
    """Stop after ``patience`` validations without an improvement of at least ``min_delta``.

    Example:
        >>> from deepseek.callbacks import EarlyStopping
        >>> stopper = EarlyStopping(monitor="val_loss", patience=3)
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 3,
        mode: str = "min",
        min_delta: float = 0.0,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        check_positive_int("patience", patience)
        self.monitor = monitor
        self.patience = patience
        self.mode = mode
        self.min_delta = abs(min_delta)
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.stopped_epoch: int | None = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.val_data is None:
            warnings.warn(
                f"EarlyStopping monitors {self.monitor!r} but the Trainer has no val_data, "
                "so it never runs; pass val_data",
                stacklevel=2,
            )

    def on_validation_end(self, trainer: Trainer) -> None:
        if getattr(trainer, "stage", "fit") != "fit":  # validate()/test() alone: not a fit
            return
        if self.monitor not in trainer.metrics:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which validation did not log; "
                f"logged: {sorted(trainer.metrics)}"
            )
        value = float(trainer.metrics[self.monitor])
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.wait = int(state["wait"])
        self.stopped_epoch = state.get("stopped_epoch")
