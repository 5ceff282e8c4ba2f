"""ProgressBar: a tqdm bar with loss, throughput and ETA; quiet when not a TTY or in CI."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from deepseek.callbacks.base import Callback
from deepseek.utils.batch import batch_size_of
from deepseek.utils.validation import check_positive_int

if TYPE_CHECKING:
    from deepseek.training import Trainer


def interactive() -> bool:
    """True on a terminal outside CI (where a live bar is useful)."""
    return sys.stderr.isatty() and not os.environ.get("CI")


class ProgressBar(Callback):
    """One bar per epoch showing loss, samples/s and tqdm's ETA.

    ``enabled=None`` (default) shows it only on an interactive terminal outside CI.
    """

    def __init__(self, enabled: bool | None = None, refresh_every_n_steps: int = 1) -> None:
        check_positive_int("refresh_every_n_steps", refresh_every_n_steps)
        self.enabled = enabled
        self.refresh_every_n_steps = refresh_every_n_steps
        self._bar: Any = None
        self._t0 = 0.0
        self._samples = 0

    def _active(self, trainer: Trainer) -> bool:
        enabled = interactive() if self.enabled is None else self.enabled
        return enabled and trainer.is_global_zero

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        if not self._active(trainer):
            return
        from tqdm.auto import tqdm

        total = trainer.num_training_batches or None
        self._bar = tqdm(
            total=total,
            initial=trainer.batch_idx,
            desc=f"epoch {trainer.current_epoch}",
            dynamic_ncols=True,
            leave=True,
        )
        self._t0, self._samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer: Trainer, outputs: Any, batch: Any, idx: int) -> None:
        if self._bar is None:
            return
        self._samples += batch_size_of(batch)
        self._bar.update(1)
        if trainer.optimizer_stepped and trainer.global_step % self.refresh_every_n_steps == 0:
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            extra = {
                k: f"{trainer.metrics[k]:.4g}"
                for k in getattr(trainer, "progress_bar_metrics", ())
                if k in trainer.metrics
            }
            self._bar.set_postfix(
                loss=f"{float(outputs['loss']):.4f}",
                samples_s=f"{self._samples / elapsed:.0f}",
                **extra,
                refresh=False,
            )

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        if self._bar is not None:
            val = {k: f"{v:.4f}" for k, v in trainer.metrics.items() if k.startswith("val_")}
            if val:
                self._bar.set_postfix(val, refresh=True)
            self._bar.close()
            self._bar = None

    def teardown(self, trainer: Trainer, stage: str) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
