"""Profile a window of optimizer steps of a run and write a Perfetto/Chrome trace."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from deepseek.callbacks.base import Callback
from deepseek.profiler import BottleneckReport, Profile, profile, record_function

if TYPE_CHECKING:
    from deepseek.training import Trainer


class Profiler(Callback):
    """Profile optimizer steps ``start_step..end_step`` (inclusive, counted like
    ``trainer.global_step``, so step 0 is the first) and write their trace.

    Each profiled step is marked ``ProfilerStep#<global_step>`` in the trace. The trace
    goes to ``dirpath/filename`` (default ``<default_root_dir>/profiler/trace.json``;
    other ranks of a distributed run write ``trace.rank<N>.json``); open it at
    https://ui.perfetto.dev. With ``summary=True`` the bottleneck report is printed
    on global rank zero. Afterwards ``.report`` holds the report and ``.trace_path``
    the file.

    Example:
        >>> from deepseek.callbacks.profiler import Profiler
        >>> cb = Profiler(start_step=2, end_step=4, dirpath="runs/prof")
        >>> # ds.Trainer(..., callbacks=[cb]).fit(...); then print(cb.report)
    """

    def __init__(
        self,
        start_step: int = 1,
        end_step: int = 3,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str = "trace.json",
        summary: bool = True,
        record_shapes: bool = False,
        profile_memory: bool = False,
    ) -> None:
        for name, value in (("start_step", start_step), ("end_step", end_step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0 (a global step), got {value!r}")
        if start_step > end_step:
            raise ValueError(
                f"start_step ({start_step}) must be <= end_step ({end_step}): the profiled "
                "window is start_step..end_step inclusive"
            )
        if dirpath is not None and not isinstance(dirpath, (str, os.PathLike)):
            raise TypeError(f"dirpath must be a path or None, got {type(dirpath).__name__}")
        if (
            not isinstance(filename, str)
            or Path(filename).name != filename
            or not filename.endswith((".json", ".json.gz"))
        ):
            raise ValueError(
                "filename must be a plain file name ending in .json or .json.gz "
                f"(the folder goes in dirpath), got {filename!r}"
            )
        for name, value in (
            ("summary", summary),
            ("record_shapes", record_shapes),
            ("profile_memory", profile_memory),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        self.start_step = start_step
        self.end_step = end_step
        self.dirpath = dirpath
        self.filename = filename
        self.summary = summary
        self.record_shapes = record_shapes
        self.profile_memory = profile_memory
        self.report: BottleneckReport | None = None
        self.trace_path: Path | None = None
        self._prof: Profile | None = None
        self._step_marker: record_function | None = None
        self._marked_step: int | None = None
        self._done = False

    def on_fit_start(self, trainer: Trainer) -> None:
        self._done = False

    def on_train_batch_start(self, trainer: Trainer, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self._prof is None:
            if self._done or not self.start_step <= step <= self.end_step:
                return
            self._prof = profile(
                record_shapes=self.record_shapes, profile_memory=self.profile_memory
            )
            self._prof.start()
        # Micro-batches of one optimizer step (gradient accumulation) share one marker.
        if step != self._marked_step:
            self._close_marker()
            self._step_marker = record_function(f"ProfilerStep#{step}")
            self._step_marker.__enter__()
            self._marked_step = step

    def on_train_batch_end(
        self, trainer: Trainer, outputs: dict[str, Any], batch: Any, batch_idx: int
    ) -> None:
        # The optimizer step of end_step has run once global_step moved past it.
        if self._prof is not None and trainer.global_step > self.end_step:
            self._finish(trainer)

    def teardown(self, trainer: Trainer, stage: str) -> None:
        # The run ended (or failed) inside the window: keep what was recorded.
        if self._prof is not None:
            self._finish(trainer)

    def _close_marker(self) -> None:
        if self._step_marker is not None:
            self._step_marker.__exit__(None, None, None)
            self._step_marker = None

    def _finish(self, trainer: Trainer) -> None:
        prof, self._prof = self._prof, None
        assert prof is not None
        self._close_marker()
        self._marked_step = None
        prof.stop()
        self._done = True
        self.trace_path = prof.export_chrome_trace(self._trace_file(trainer))
        self.report = prof.summary()
        if self.summary and getattr(trainer, "is_global_zero", True):
            print(f"{self.report}\nTrace: {self.trace_path}")

    def _trace_file(self, trainer: Trainer) -> Path:
        root = getattr(trainer, "default_root_dir", None) or os.getcwd()
        folder = Path(self.dirpath) if self.dirpath is not None else Path(root) / "profiler"
        name = self.filename
        rank = _global_rank()
        if rank:  # one file per rank, so ranks do not overwrite each other
            stem, dot, ext = name.partition(".")
            name = f"{stem}.rank{rank}{dot}{ext}"
        return folder / name


def _global_rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
