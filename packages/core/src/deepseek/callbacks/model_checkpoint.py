"""ModelCheckpoint: save by epoch or every N optimizer steps, keep the best k.

Bookkeeping that survives resumes, kills and copies: every checkpoint records the run
that wrote it (``meta.json`` -> ``metadata["run"]``: a run id kept across resumes, a
save counter, the clock time of the save, the monitored score); the kept checkpoints
are remembered by name, relative to the folder; pruning deletes only a directory
directly inside this folder that holds a complete checkpoint of this run.
``resume="last"`` resumes the newest save in the folder, i.e. the newest checkpoint of
the run that wrote there last (never the highest step of an older run).
"""

from __future__ import annotations

import difflib
import math
import os
import shutil
import string
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepseek.callbacks.base import Callback
from deepseek.checkpoint.format import CheckpointError, read_meta
from deepseek.checkpoint.runs import RUN_KEY, is_plain_name, run_info
from deepseek.utils.validation import is_positive_int

if TYPE_CHECKING:
    from deepseek.training import Trainer

LAST_NAME = "last"


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
            It must be logged by the first validation, else that validation raises a
            ValueError listing the logged names. None: rank by recency (newest first).
        mode: ``'min'``, ``'max'``, or ``'auto'`` (max for names with acc/f1/auc/...).
        save_top_k: keep the best k (by ``monitor``; the newest k without one); -1 keeps all.
            Holds across resumes and kills: checkpoints of this run that a resumed run
            no longer ranks in the top k are deleted at its next save.
        save_last: also keep an up-to-date copy at ``<dir>/last``.

    Attributes:
        best_model_path: the best kept checkpoint (by ``monitor``; the newest without
            one), or None before the first save.
        last_model_path: the newest checkpoint still on disk: ``<dir>/last`` with
            ``save_last=True``, else the newest of the kept ones. Never a pruned one.
        run_id: identifies this run's checkpoints; a resumed run keeps its id.

    Pruning never deletes what this run did not write: only directories directly in
    this folder, holding a complete checkpoint whose ``meta.json`` names this run. Names
    are stored relative to the folder, so a copied or moved run prunes its own copies
    and never its source.

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
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise ValueError(f"monitor must be a metric name or None, got {monitor!r}")
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
        self.saved: list[tuple[str, float]] = []  # (name in dirpath, score), oldest first
        self.run_id: str | None = None
        self._seq = 0  # saves of this run so far
        self._best_name: str | None = None
        self._last_name: str | None = None

    # -- paths ------------------------------------------------------------------------
    @property
    def best_model_path(self) -> str | None:
        return self._path_of(self._best_name)

    @property
    def last_model_path(self) -> str | None:
        return self._path_of(self._last_name)

    def _path_of(self, name: str | None) -> str | None:
        if name is None or self.dirpath is None:
            return None
        return str(self.dirpath / name)

    # -- hooks ------------------------------------------------------------------------
    def setup(self, trainer: Trainer, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir or ".") / "checkpoints"
        if self.run_id is None:
            self.run_id = uuid.uuid4().hex[:12]

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

    def on_validation_end(self, trainer: Trainer) -> None:
        if self.monitor is None or getattr(trainer, "stage", "fit") != "fit":
            return
        if self.monitor not in trainer.metrics:
            logged = sorted(trainer.metrics)
            close = difflib.get_close_matches(self.monitor, logged, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"ModelCheckpoint(monitor={self.monitor!r}): the validation logged no "
                f"{self.monitor!r}; logged: {', '.join(logged) or 'nothing'}.{hint} "
                "Pass one of those names, or monitor=None to keep the newest checkpoints"
            )

    # -- saving -----------------------------------------------------------------------
    def _save(self, trainer: Trainer, epochs_done: int) -> None:
        assert self.dirpath is not None and self.run_id is not None  # set by setup()
        fields = {**trainer.metrics.as_floats(), "epoch": epochs_done, "step": trainer.global_step}
        try:
            name = self.template.format(**fields)
        except KeyError as exc:
            raise KeyError(
                f"ModelCheckpoint filepath template {self.template!r} uses {exc}, which is "
                f"not logged; available: {sorted(fields)}"
            ) from None
        if not is_plain_name(name) or name == LAST_NAME:
            raise ValueError(
                f"ModelCheckpoint filepath template {self.template!r} gave the name "
                f"{name!r}, which is not a plain directory name (or is reserved for "
                "save_last); change the template"
            )
        score = self._score(trainer)
        previous = (list(self.saved), self._seq)
        # The checkpoint's own state lists it, so a run resumed from it can prune it later.
        self._seq += 1
        self.saved = [(n, s) for n, s in self.saved if n != name] + [(name, score)]
        try:
            trainer.save_checkpoint(
                self.dirpath / name,
                weights_only=self.save_weights_only,
                **{RUN_KEY: self._run_record(score, "top_k")},
            )
        except BaseException:
            self.saved, self._seq = previous
            raise
        self._last_name = name
        if self.save_last:
            trainer.save_checkpoint(
                self.dirpath / LAST_NAME,
                weights_only=self.save_weights_only,
                **{RUN_KEY: self._run_record(score, "last")},
            )
        self._prune(trainer)

    def _run_record(self, score: float, role: str) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "seq": self._seq,
            "callback": self.state_key,
            "monitor": self.monitor,
            "mode": self.mode,
            "score": None if math.isnan(score) else score,
            "role": role,
        }

    def _score(self, trainer: Trainer) -> float:
        if self.monitor is None or self.monitor not in trainer.metrics:
            return math.nan  # checked at the first validation (on_validation_end)
        return float(trainer.metrics[self.monitor])

    def _rank_key(self, item: tuple[str, float]) -> float:
        score = item[1]
        if math.isnan(score):
            return math.inf
        return score if self.mode == "min" else -score

    def _prune(self, trainer: Trainer) -> None:
        if self.monitor is not None:
            ranked = sorted(self.saved, key=self._rank_key)  # stable: older first on ties
        else:
            ranked = list(reversed(self.saved))  # newest first
        keep = ranked if self.save_top_k == -1 else ranked[: self.save_top_k]
        kept = {n for n, _ in keep}
        for name, _ in self.saved:
            if name not in kept and trainer.is_global_zero:
                self._delete(name)
        self.saved = [(n, s) for n, s in self.saved if n in kept]
        self._best_name = keep[0][0] if keep else None
        if self.save_last:
            self._last_name = LAST_NAME
        elif self.saved:
            self._last_name = self.saved[-1][0]  # newest kept

    def _delete(self, name: str) -> None:
        """Delete ``dirpath/name`` only if it is this run's checkpoint, inside dirpath."""
        assert self.dirpath is not None
        target = self.dirpath / name
        refused = None
        if not is_plain_name(name):
            refused = "its name is not a plain directory name in the checkpoint folder"
        elif not os.path.lexists(target):
            return  # already gone (deleted before a kill, or by the user)
        elif target.is_symlink() or target.resolve().parent != self.dirpath.resolve():
            refused = "it is a symlink or lies outside the checkpoint folder"
        else:
            try:
                owner = run_info(read_meta(target)).get("id")
            except (CheckpointError, OSError):
                owner = None
                refused = "it does not hold a complete DeepSeek checkpoint"
            if refused is None and owner != self.run_id:
                refused = f"it was written by run {owner!r}, not this run ({self.run_id})"
        if refused is not None:
            warnings.warn(
                f"ModelCheckpoint: not deleting {target} to honour save_top_k={self.save_top_k}: "
                f"{refused}",
                stacklevel=3,
            )
            return
        shutil.rmtree(target)

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "saved": [[n, s] for n, s in self.saved],
            "run_id": self.run_id,
            "seq": self._seq,
            "best": self._best_name,
            "last": self._last_name,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        run_id = state.get("run_id")
        if isinstance(run_id, str) and run_id:
            self.run_id = run_id  # a resumed run is the same run
        seq = state.get("seq")
        self._seq = seq if isinstance(seq, int) and seq >= 0 else 0
        saved = []
        for entry in state.get("saved", []):
            try:
                name, score = entry
                score = float(score)
            except (TypeError, ValueError):
                continue
            name = self._as_name(name)
            if name is not None:
                saved.append((name, score))
        self.saved = saved
        self._best_name = self._as_name(state.get("best") or state.get("best_model_path"))
        self._last_name = self._as_name(state.get("last") or state.get("last_model_path"))

    def _as_name(self, entry: Any) -> str | None:
        """A stored entry as a plain name in dirpath; older states stored absolute paths,
        kept only when they point directly into this folder."""
        if not isinstance(entry, str) or not entry:
            return None
        if is_plain_name(entry):
            return entry
        path = Path(entry)
        inside = (
            self.dirpath is not None
            and path.is_absolute()
            and path.parent.resolve() == self.dirpath.resolve()
        )
        return path.name if inside and is_plain_name(path.name) else None


def _check_template(template: str) -> None:
    try:
        list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid ModelCheckpoint filepath template {template!r}: {exc}") from None
