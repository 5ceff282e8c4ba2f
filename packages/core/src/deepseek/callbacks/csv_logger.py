"""CSVLogger: metrics to a CSV file, one row per logging event."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepseek.callbacks.base import Callback
from deepseek.checkpoint.atomic import write_atomically
from deepseek.utils.validation import check_positive_int

if TYPE_CHECKING:
    from deepseek.training import Trainer


class CSVLogger(Callback):
    """Writes ``epoch, step`` and every metric to ``<save_dir>/metrics.csv``.

    A row is logged every ``log_every_n_steps`` optimizer steps (training metrics) and
    after each validation. The file is rewritten atomically at each epoch end and with
    every checkpoint, so it is always a complete CSV and holds every row a resume will not
    redo; on resume, rows after the restored step are dropped (the resumed run logs them
    again).

    Example:
        >>> from deepseek.callbacks import CSVLogger
        >>> logger = CSVLogger("runs/exp1", log_every_n_steps=10)
    """

    def __init__(
        self,
        save_dir: str | os.PathLike | None = None,
        filename: str = "metrics.csv",
        log_every_n_steps: int = 50,
    ) -> None:
        check_positive_int("log_every_n_steps", log_every_n_steps)
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.filename = filename
        self.log_every_n_steps = log_every_n_steps
        self.rows: list[dict[str, Any]] = []

    @property
    def path(self) -> Path:
        if self.save_dir is None:
            raise RuntimeError("CSVLogger has no save_dir yet (it is set in setup)")
        return self.save_dir / self.filename

    def setup(self, trainer: Trainer, stage: str) -> None:
        if self.save_dir is None:
            root = trainer.default_root_dir or Path(".")
            self.save_dir = Path(root)

    def on_load_checkpoint(self, trainer: Trainer, path: str) -> None:
        if self.path.exists():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            self.rows = [
                {k: v for k, v in row.items() if v != ""}
                for row in rows
                if int(row.get("step") or 0) <= trainer.global_step
            ]

    def log(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics})

    def on_train_batch_end(self, trainer: Trainer, outputs: Any, batch: Any, idx: int) -> None:
        if trainer.optimizer_stepped and trainer.global_step % self.log_every_n_steps == 0:
            train = {k: v for k, v in trainer.metrics.items() if not k.startswith("val_")}
            self.log(trainer, train)

    def on_validation_end(self, trainer: Trainer) -> None:
        prefix = "test_" if getattr(trainer, "stage", None) == "test" else "val_"
        self.log(trainer, {k: v for k, v in trainer.metrics.items() if k.startswith(prefix)})

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        self.flush(trainer)

    def on_save_checkpoint(self, trainer: Trainer, path: str) -> None:
        # A run killed after this checkpoint resumes from it: the rows up to here must be
        # on disk, or the resumed log has a hole back to the last epoch end.
        self.flush(trainer)

    def teardown(self, trainer: Trainer, stage: str) -> None:
        self.flush(trainer)  # also after an exception: keep the rows logged so far

    def flush(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or not self.rows:
            return
        columns = ["epoch", "step"]
        for row in self.rows:
            columns += [k for k in row if k not in columns]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.rows)

        # Rewritten whole at each flush (columns may grow); not fsynced: a log, flushed often.
        write_atomically(self.path, write, durable=False)
