"""deepseek-tensorboard: the ``tensorboard`` callback, a TensorBoard event-file logger."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepseek.callbacks import Callback, Profiler

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from deepseek.training import Trainer


def _positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        also = " or None (never)" if allow_none else ""
        raise ValueError(
            f"tensorboard: {name} must be a positive int{also}, got {value!r}; "
            f"e.g. {{name: tensorboard, {name}: 50}}"
        )


def _check_writable(log_dir: Path) -> None:
    """Create ``log_dir`` and write a probe file into it, or raise one clear error."""
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=log_dir, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(
            f"tensorboard: log_dir {str(log_dir)!r} is not a writable directory ({reason}); "
            "pass a log_dir you can write to, e.g. {name: tensorboard, log_dir: runs/tb}"
        ) from None


class TensorBoardLogger(Callback):
    """Write what the Trainer logs to TensorBoard event files in ``log_dir``.

    - every training metric in ``trainer.metrics`` (``train_loss``, ``grad_norm``,
      values from ``trainer.log``) every ``log_every_n_steps`` optimizer steps, at step
      ``trainer.global_step`` (optimizer steps done);
    - every validation/test metric (``val_*``/``test_*``) after each validation;
    - ``lr/group{i}`` (``lr/opt{j}-group{i}`` with several optimizers): the learning rate
      each parameter group used for the step just taken;
    - ``weights/<parameter name>`` histograms every ``histogram_every_n_steps`` steps
      (``None``: never);
    - ``profiler/trace``: a text pointing to the trace file a ``Profiler`` callback wrote,
      with its bottleneck summary.

    ``log_dir`` defaults to ``<default_root_dir>/tensorboard``. Only global rank zero
    writes. A resumed run appends to the same directory: events after the restored step
    that the first run wrote are purged (TensorBoard's ``purge_step``), so each step
    appears once. The writer is flushed at each epoch end and closed when the stage ends,
    also after an exception.

    Example:
        >>> from deepseek_tensorboard import TensorBoardLogger
        >>> logger = TensorBoardLogger("runs/tb", histogram_every_n_steps=50)
        >>> # ds.Trainer(..., callbacks=[logger]).fit(); then: tensorboard --logdir runs/tb
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        log_every_n_steps: int = 1,
        histogram_every_n_steps: int | None = 100,
        flush_secs: int = 30,
    ) -> None:
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(
                f"tensorboard: log_dir must be a path (str) or None, got {type(log_dir).__name__}"
            )
        _positive_int("log_every_n_steps", log_every_n_steps)
        _positive_int("histogram_every_n_steps", histogram_every_n_steps, allow_none=True)
        _positive_int("flush_secs", flush_secs)
        if log_dir is not None:
            # Fail at construction (config time) rather than after the model is built.
            path = Path(log_dir)
            parent = path
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            if parent.exists() and not parent.is_dir():
                raise ValueError(
                    f"tensorboard: log_dir {str(path)!r} is not a writable directory "
                    f"({str(parent)!r} is a file); pass a log_dir you can write to, "
                    "e.g. {name: tensorboard, log_dir: runs/tb}"
                )
        self.log_dir: Path | None = Path(log_dir) if log_dir is not None else None
        self._log_dir_given = log_dir is not None
        self.log_every_n_steps = log_every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.flush_secs = flush_secs
        self._writer: SummaryWriter | None = None
        self._purge_step: int | None = None
        self._lrs: dict[str, float] = {}
        self._traces_logged: set[str] = set()

    # -- the writer --------------------------------------------------------------------
    @property
    def writer(self) -> SummaryWriter | None:
        """The open ``SummaryWriter`` (None before the first write and on other ranks)."""
        return self._writer

    def _get_writer(self, trainer: Trainer) -> SummaryWriter | None:
        if not trainer.is_global_zero:
            return None
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            assert self.log_dir is not None
            _check_writable(self.log_dir)
            self._writer = SummaryWriter(
                str(self.log_dir), purge_step=self._purge_step, flush_secs=self.flush_secs
            )
            self._purge_step = None
        return self._writer

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    # -- hooks -------------------------------------------------------------------------
    def setup(self, trainer: Trainer, stage: str) -> None:
        if self.log_dir is None:
            self.log_dir = Path(trainer.default_root_dir or ".") / "tensorboard"
        if trainer.is_global_zero:
            _check_writable(self.log_dir)

    def on_load_checkpoint(self, trainer: Trainer, path: str) -> None:
        # Steps after the checkpoint were (maybe) logged by the run that died: they are
        # redone now, so TensorBoard drops the old ones from this step on.
        self._close()
        self._purge_step = trainer.global_step + 1

    def on_before_optimizer_step(self, trainer: Trainer, optimizer: Any) -> None:
        if not trainer.is_global_zero:
            return
        optimizers = list(getattr(trainer, "optimizers", [trainer.optimizer]))
        index = next((j for j, o in enumerate(optimizers) if o is optimizer), 0)
        for i, group in enumerate(optimizer.param_groups):
            tag = f"lr/group{i}" if len(optimizers) == 1 else f"lr/opt{index}-group{i}"
            self._lrs[tag] = float(group["lr"])

    def on_train_batch_end(
        self, trainer: Trainer, outputs: dict[str, Any], batch: Any, batch_idx: int
    ) -> None:
        if not trainer.optimizer_stepped or not trainer.is_global_zero:
            return
        step = trainer.global_step
        lrs, self._lrs = self._lrs, {}
        writer = None
        if step % self.log_every_n_steps == 0:
            writer = self._get_writer(trainer)
            assert writer is not None
            for name, value in trainer.metrics.items():
                if not name.startswith(("val_", "test_")) and _is_number(value):
                    writer.add_scalar(name, float(value), step)
            for tag, lr in lrs.items():
                writer.add_scalar(tag, lr, step)
        every = self.histogram_every_n_steps
        if every is not None and step % every == 0:
            writer = writer or self._get_writer(trainer)
            assert writer is not None
            for name, param in _named_parameters(trainer):
                writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
        self._log_traces(trainer)

    def on_validation_end(self, trainer: Trainer) -> None:
        writer = self._get_writer(trainer)
        if writer is None:
            return
        prefix = "test_" if getattr(trainer, "stage", None) == "test" else "val_"
        for name, value in trainer.metrics.items():
            if name.startswith(prefix) and _is_number(value):
                writer.add_scalar(name, float(value), trainer.global_step)

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        self._log_traces(trainer)
        self._close()

    def on_exception(self, trainer: Trainer, exception: BaseException) -> None:
        self._close()  # keep everything logged before the failure

    def teardown(self, trainer: Trainer, stage: str) -> None:
        if trainer.is_global_zero and self._writer is not None:
            self._log_traces(trainer)
        self._close()

    def _log_traces(self, trainer: Trainer) -> None:
        for cb in trainer.callbacks:
            trace = getattr(cb, "trace_path", None) if isinstance(cb, Profiler) else None
            if trace is None or str(trace) in self._traces_logged:
                continue
            writer = self._get_writer(trainer)
            if writer is None:
                return
            self._traces_logged.add(str(trace))
            text = f"Profiler trace: `{trace}` (open it at https://ui.perfetto.dev)"
            if getattr(cb, "report", None) is not None:
                text += "\n\n```\n" + str(cb.report) + "\n```"
            writer.add_text("profiler/trace", text, trainer.global_step)

    # -- resume --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The run directory, so a resumed run appends to it even with a default log_dir."""
        return {"log_dir": str(self.log_dir) if self.log_dir is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self._log_dir_given and state.get("log_dir"):
            self.log_dir = Path(state["log_dir"])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _named_parameters(trainer: Trainer) -> list[tuple[str, Any]]:
    model = trainer.model
    strategy = getattr(trainer, "strategy", None)
    if strategy is not None and hasattr(strategy, "unwrap"):
        model = strategy.unwrap(model)
    return [(n, p) for n, p in model.named_parameters() if p.numel() > 0]
