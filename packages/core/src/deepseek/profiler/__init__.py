"""Profiling: torch's profiler with activities picked for you and a bottleneck report.

``profile()`` wraps :class:`torch.profiler.profile` (everything it has still works) and
adds ``summary()``, which says where the wall time went: accelerator (or CPU compute)
busy, host-to-device copies, data-loader waits, optimizer, top operators, and a
one-line suggestion for each figure out of its target.

Example:
    >>> import torch
    >>> import deepseek as ds
    >>> model = torch.nn.Linear(8, 1)
    >>> def train_step():
    ...     model(torch.randn(4, 8)).sum().backward()
    >>> with ds.profiler.profile() as prof:
    ...     train_step()
    >>> table = prof.key_averages().table()
    >>> "aten::addmm" in table
    True
    >>> print(prof.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import (
    ProfilerActivity,
    record_function,
    schedule,
    tensorboard_trace_handler,
)

from deepseek.checkpoint.atomic import write_atomically
from deepseek.profiler.report import (
    BUSY_TARGET,
    DATALOADER_TARGET,
    H2D_TARGET,
    OPTIMIZER_TARGET,
    BottleneckReport,
    OperatorStat,
    analyze,
)

__all__ = [
    "BUSY_TARGET",
    "DATALOADER_TARGET",
    "H2D_TARGET",
    "OPTIMIZER_TARGET",
    "BottleneckReport",
    "OperatorStat",
    "Profile",
    "ProfilerActivity",
    "default_activities",
    "profile",
    "record_function",
    "schedule",
    "tensorboard_trace_handler",
]


def default_activities() -> list[ProfilerActivity]:
    """CPU always, plus the accelerator torch can see (ROCm reports itself as CUDA)."""
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available() and hasattr(ProfilerActivity, "XPU"):
        activities.append(ProfilerActivity.XPU)
    return activities


def _device_of(activities: Iterable[Any]) -> str:
    """Which device the busy/copy figures are about: the first accelerator profiled."""
    groups = set()
    for item in activities:
        groups.update(item.keys() if isinstance(item, dict) else [item])
    for activity in (ProfilerActivity.CUDA, getattr(ProfilerActivity, "XPU", None)):
        if activity is not None and activity in groups:
            return activity.name.lower()
    return "cpu"


def _check_activities(activities: Any) -> list[Any]:
    if isinstance(activities, (str, bytes, ProfilerActivity)) or not isinstance(
        activities, Iterable
    ):
        raise TypeError(
            "activities must be a list of ProfilerActivity, e.g. "
            f"[ProfilerActivity.CPU, ProfilerActivity.CUDA]; got {activities!r}"
        )
    activities = list(activities)
    if not activities:
        raise ValueError("activities is empty: pass at least [ProfilerActivity.CPU] or None")
    for item in activities:
        if not isinstance(item, (ProfilerActivity, dict)):
            raise TypeError(
                f"activities must hold ProfilerActivity members, got {item!r} "
                f"({type(item).__name__})"
            )
    return activities


class Profile:
    """A running or finished profile: :class:`torch.profiler.profile` plus ``summary()``.

    Attributes not defined here (``step_num``, ``export_stacks``, ``add_metadata``, ...)
    are torch's own, forwarded to the wrapped profiler.

    Example:
        >>> import torch
        >>> import deepseek as ds
        >>> with ds.profiler.profile() as prof:
        ...     with ds.profiler.record_function("my_block"):
        ...         _ = torch.randn(32, 32).relu()
        >>> any(e.name == "my_block" for e in prof.events())
        True
    """

    def __init__(self, torch_profile: torch.profiler.profile, device: str) -> None:
        self._prof = torch_profile
        self.device = device
        self._started_at: float | None = None
        self._wall_s: float | None = None
        self._exported: tuple[Any, Path] | None = None  # (torch recording, file written)

    @property
    def torch_profile(self) -> torch.profiler.profile:
        """The wrapped :class:`torch.profiler.profile`."""
        return self._prof

    def __enter__(self) -> Profile:
        self._prof.__enter__()
        self._mark_started()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._mark_stopped()
        self._prof.__exit__(*exc_info)

    def start(self) -> None:
        self._prof.start()
        self._mark_started()

    def stop(self) -> None:
        self._mark_stopped()
        self._prof.stop()

    def _mark_started(self) -> None:
        self._started_at, self._wall_s = time.perf_counter(), None

    def _mark_stopped(self) -> None:
        if self._started_at is not None:
            self._wall_s = time.perf_counter() - self._started_at

    def step(self) -> None:
        """Tell the profiler a training step ended (drives ``schedule``)."""
        self._prof.step()

    def events(self) -> Any:
        """The raw :class:`~torch.autograd.profiler_util.FunctionEvent` list."""
        self._check_recorded("events()")
        return self._prof.events()

    def key_averages(self, *args: Any, **kwargs: Any) -> Any:
        """Torch's per-operator aggregation; ``.table()`` prints it."""
        self._check_recorded("key_averages()")
        return self._prof.key_averages(*args, **kwargs)

    def export_chrome_trace(self, path: str | os.PathLike[str], **kwargs: Any) -> Path:
        """Write the trace as Chrome/Perfetto JSON (gzipped when ``path`` ends in ``.gz``),
        atomically; open it at https://ui.perfetto.dev or chrome://tracing.

        Torch can export each recording once; ``kwargs`` go to its exporter.
        """
        self._check_recorded("export_chrome_trace()")
        recording = self._prof.profiler
        if self._exported is not None and self._exported[0] is recording:
            raise RuntimeError(
                f"this trace was already exported to {self._exported[1]}; torch exports a "
                "recording once: copy that file instead"
            )
        written = write_atomically(
            path, lambda tmp: self._prof.export_chrome_trace(str(tmp), **kwargs)
        )
        self._exported = (recording, written)
        return written

    def summary(self, top_k: int = 10) -> BottleneckReport:
        """The bottleneck report of the recorded events; ``print()`` it.

        With a ``schedule``, it covers the last completed recording cycle.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"top_k must be a non-negative int, got {top_k!r}")
        events = self.events()
        # A schedule's steps are timed by their ProfilerStep# markers; our clock
        # measures the whole with-block, which is only right without one.
        measured = None if self._prof.record_steps else self._wall_s
        return analyze(
            events,
            self.key_averages(),
            device=self.device,
            measured_wall_s=measured,
            top_k=top_k,
        )

    def _check_recorded(self, what: str) -> None:
        if self._prof.profiler is None:
            raise RuntimeError(
                f"{what} needs recorded events: run code inside `with profile() as prof:` "
                "first (with a schedule, step() until an active cycle has finished)"
            )

    def __getattr__(self, name: str) -> Any:
        if name == "_prof":  # not set yet (e.g. during copy): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self._prof, name)

    def __repr__(self) -> str:
        return f"Profile(device={self.device!r}, step_num={self._prof.step_num})"


_TORCH_ONLY_KWARGS = frozenset(inspect.signature(torch.profiler.profile.__init__).parameters) - {
    "self",
    "activities",
    "record_shapes",
    "profile_memory",
    "with_stack",
    "schedule",
    "on_trace_ready",
}


def profile(
    *,
    activities: Iterable[ProfilerActivity] | None = None,
    record_shapes: bool = False,
    profile_memory: bool = False,
    with_stack: bool = False,
    schedule: Callable[[int], Any] | None = None,
    on_trace_ready: Callable[[Profile], Any] | None = None,
    **kwargs: Any,
) -> Profile:
    """Profile a region; use as a context manager.

    Args:
        activities: what to record; default: CPU plus CUDA (also ROCm) or XPU when
            available.
        record_shapes, profile_memory, with_stack: as in ``torch.profiler.profile``.
        schedule: a ``ds.profiler.schedule(wait=, warmup=, active=)``; call
            ``prof.step()`` after each step.
        on_trace_ready: called with this ``Profile`` when a scheduled cycle ends, e.g.
            ``tensorboard_trace_handler("runs/prof")``.
        **kwargs: any other ``torch.profiler.profile`` argument (``with_flops``, ...).

    Example:
        >>> import torch
        >>> import deepseek as ds
        >>> with ds.profiler.profile() as prof:
        ...     _ = torch.randn(16, 16) @ torch.randn(16, 16)
        >>> print(prof.key_averages().table())  # doctest: +SKIP
        >>> print(prof.summary())  # doctest: +SKIP
    """
    unknown = sorted(set(kwargs) - _TORCH_ONLY_KWARGS)
    if unknown:
        raise TypeError(
            f"profile() got unknown argument(s) {unknown}; torch.profiler.profile also "
            f"accepts: {sorted(_TORCH_ONLY_KWARGS)}"
        )
    activities = default_activities() if activities is None else _check_activities(activities)
    for name, value in (("schedule", schedule), ("on_trace_ready", on_trace_ready)):
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")

    wrapper: Profile | None = None

    def trace_ready(_: Any) -> None:
        # torch passes its own object; hand the user the wrapper so summary() works.
        assert on_trace_ready is not None and wrapper is not None
        on_trace_ready(wrapper)

    torch_profile = torch.profiler.profile(
        activities=activities,
        record_shapes=record_shapes,
        profile_memory=profile_memory,
        with_stack=with_stack,
        schedule=schedule,
        on_trace_ready=trace_ready if on_trace_ready is not None else None,
        **kwargs,
    )
    wrapper = Profile(torch_profile, _device_of(activities))
    return wrapper
