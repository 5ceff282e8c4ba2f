"""ModelCheckpoint: save by epoch or every N optimizer steps, keep the best k."""

from __future__ import annotations

import math
import os
import shutil
import string
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepseek.callbacks.base import Callback
from deepseek.utils.validation import is_positive_int

if TYPE_CHECKING:
    from deepseek.training import Trainer


class ModelCheckpoint(Callback):
    """Write checkpoint directories during training.

    Args:
        filepath: directory + name template, e.g. ``'./checkpoints/epoch_{epoch}'`` or
            ``'ckpt/{epoch}-{val_loss:.3f}'``. Fields: ``epoch`` (epochs completed),
            ``step`` (optimizer steps) and any logged metric. Default:
            ``<trainer.default_root_dir>/checkpoints/epoch_{epoch}-step_{step}``.
        save_weights_only: store only the model weights (load them with
            ``deepseek.checkpoint.load_weights``); full checkpoints also resume training.
        save_freq: ``'epoch'``, or an int: every that many optimizer steps.
        monitor: metric that ranks checkpoints for ``save_top_k`` (e.g. ``'val_loss'``).
        mode: ``'min'``, ``'max'``, or ``'auto'`` (max for names with acc/f1/auc/...).
        save_top_k: keep the best k (by ``monitor``; the newest k without one); -1 keeps all.
        save_last: also keep an up-to-date copy at ``<dir>/last``.

    Example:
        >>> from deepseek.callbacks import ModelCheckpoint
        >>> cb = ModelCheckpoint(filepath='./checkpoints/epoch_{epoch}',
        ...                      save_weights_only=True, save_freq='epoch', monitor='val_loss')
    """

    def __init__(
        self,
        filepath: str | os.PathLike | None = None,
        save_weights_only: bool = False,
        save_freq: str | int = "epoch",
        monitor: str | None = None,
        mode: str = "auto",
        save_top_k: int = -1,
        save_last: bool = False,
    ) -> None:
        if save_freq != "epoch" and not is_positive_int(save_freq):
            raise ValueError(f"save_freq must be 'epoch' or a positive int, got {save_freq!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if not isinstance(save_top_k, int) or save_top_k < -1 or save_top_k == 0:
            raise ValueError(f"save_top_k must be -1 (keep all) or >= 1, got {save_top_k!r}")
        self.dirpath: Path | None = None
        self.template = "epoch_{epoch}-step_{step}"
        if filepath is not None:
            self.dirpath, self.template = Path(filepath).parent, Path(filepath).name
        _check_template(self.template)
        self.save_weights_only = save_weights_only
        self.save_freq = save_freq
        self.monitor = monitor
        if mode == "auto":
            maximize = monitor and any(k in monitor for k in ("acc", "f1", "auc", "precision"))
            mode = "max" if maximize else "min"
        self.mode = mode
        self.save_top_k = save_top_k
        self.save_last = save_last
        self.saved: list[tuple[str, float]] = []  # (path, score) oldest first
        self.best_model_path: str | None = None
        self.last_model_path: str | None = None
        self._warned_missing = False

    def setup(self, trainer: Trainer, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir or ".") / "checkpoints"

    def on_train_batch_end(self, trainer: Trainer, outputs: Any, batch: Any, idx: int) -> None:
        if (
            isinstance(self.save_freq, int)
            and trainer.optimizer_stepped
            and trainer.global_step % self.save_freq == 0
        ):
            self._save(trainer, epochs_done=trainer.current_epoch)

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        if self.save_freq == "epoch":
            self._save(trainer, epochs_done=trainer.current_epoch + 1)

    def _save(self, trainer: Trainer, epochs_done: int) -> None:
        fields = {**trainer.metrics.as_floats(), "epoch": epochs_done, "step": trainer.global_step}
        try:
            name = self.template.format(**fields)
        except KeyError as exc:
            raise KeyError(
                f"ModelCheckpoint filepath template {self.template!r} uses {exc}, which is "
                f"not logged; available: {sorted(fields)}"
            ) from None
        path = self.dirpath / name
        trainer.save_checkpoint(path, weights_only=self.save_weights_only)
        score = self._score(trainer)
        self.saved = [(p, s) for p, s in self.saved if p != str(path)] + [(str(path), score)]
        self.last_model_path = str(path)
        if self.save_last:
            trainer.save_checkpoint(self.dirpath / "last", weights_only=self.save_weights_only)
        self._prune(trainer)

    def _score(self, trainer: Trainer) -> float:
        if self.monitor is None:
            return math.nan
        if self.monitor not in trainer.metrics:
            if not self._warned_missing:
                warnings.warn(
                    f"ModelCheckpoint monitors {self.monitor!r}, which is not logged "
                    f"(logged: {sorted(trainer.metrics)}); checkpoints are not ranked",
                    stacklevel=2,
                )
                self._warned_missing = True
            return math.nan
        return float(trainer.metrics[self.monitor])

    def _rank_key(self, item: tuple[str, float]) -> float:
        score = item[1]
        if math.isnan(score):
            return math.inf
        return score if self.mode == "min" else -score

    def _prune(self, trainer: Trainer) -> None:
        ranked = self.saved
        if self.monitor is not None:
            ranked = sorted(self.saved, key=self._rank_key)
            self.best_model_path = ranked[0][0]
        else:
            ranked = list(reversed(self.saved))  # newest first
            self.best_model_path = ranked[0][0]
        if self.save_top_k == -1 or len(ranked) <= self.save_top_k:
            return
        keep = {p for p, _ in ranked[: self.save_top_k]}
        for path, _ in self.saved:
            if path not in keep and trainer.is_global_zero:
                shutil.rmtree(path, ignore_errors=True)
        self.saved = [(p, s) for p, s in self.saved if p in keep]

    def state_dict(self) -> dict[str, Any]:
        return {
            "saved": [[p, s] for p, s in self.saved],
            "best_model_path": self.best_model_path,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved = [(p, float(s)) for p, s in state.get("saved", [])]
        self.best_model_path = state.get("best_model_path")
        self.last_model_path = state.get("last_model_path")


def _check_template(template: str) -> None:
    try:
        list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid ModelCheckpoint filepath template {template!r}: {exc}") from None
