"""The bottleneck report: where the wall time of a profiled region went.

Every figure is the *union* of the matching event intervals divided by the wall time,
so nested or overlapping events are never counted twice.

Example:
    >>> import torch
    >>> import deepseek as ds
    >>> with ds.profiler.profile() as prof:
    ...     _ = torch.randn(64, 64) @ torch.randn(64, 64)
    >>> report = prof.summary()
    >>> 0.0 <= report.busy_fraction <= 1.0
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Targets of a healthy training step; a figure outside its target gets a suggestion.
BUSY_TARGET = 0.75  # accelerator (or, on CPU-only runs, compute) busy fraction: above
H2D_TARGET = 0.05  # host-to-device copy fraction: below
DATALOADER_TARGET = 0.10  # data-loader wait fraction: below
OPTIMIZER_TARGET = 0.30  # optimizer step + zero_grad fraction: below

# Step markers are "ProfilerStep#<n>"; torch renames them "ProfilerStep*" in events().
_STEP_PREFIX = "ProfilerStep"
_OPTIMIZER_PREFIXES = ("Optimizer.step#", "Optimizer.zero_grad#")
_DATALOADER_PREFIX = "enumerate(DataLoader)#"
# Kineto names host-to-device copies "Memcpy HtoD (...)" on CUDA and ROCm.
_H2D_MARKERS = ("HtoD", "H2D")


@dataclass(frozen=True)
class OperatorStat:
    """One row of the top-operators list: ``self_time_s`` excludes time in child events."""

    name: str
    calls: int
    self_time_s: float
    fraction: float  # self_time_s / wall time


@dataclass(frozen=True)
class BottleneckReport:
    """Where the wall time of a profiled region went; fractions are in ``0..1``.

    ``str(report)`` is the printed report, ``report.to_dict()`` the same numbers as
    plain data (e.g. for a JSON log).
    """

    device: str  # "cuda", "xpu" or "cpu": which busy/copy figures were measured
    wall_time_s: float
    steps: int | None  # number of ProfilerStep# markers, None when there were none
    busy_fraction: float
    busy_label: str
    h2d_fraction: float
    h2d_label: str
    dataloader_fraction: float
    optimizer_fraction: float
    top_operators: list[OperatorStat] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        steps = f", {self.steps} steps" if self.steps else ""
        lines = [f"Bottleneck report ({self.device}{steps}, wall {self.wall_time_s:.3f} s)"]
        rows = [
            (self.busy_label, self.busy_fraction, f"> {BUSY_TARGET:.0%}", self._busy_low),
            (self.h2d_label, self.h2d_fraction, f"< {H2D_TARGET:.0%}", self._h2d_high),
            (
                "data-loader wait",
                self.dataloader_fraction,
                f"< {DATALOADER_TARGET:.0%}",
                self._dataloader_high,
            ),
            (
                "optimizer (step + zero_grad)",
                self.optimizer_fraction,
                f"< {OPTIMIZER_TARGET:.0%}",
                self._optimizer_high,
            ),
        ]
        width = max(len(label) for label, *_ in rows)
        for label, value, target, out_of_target in rows:
            flag = "  <-- out of target" if out_of_target else ""
            lines.append(f"  {label:<{width}}  {value:6.1%}  (target {target}){flag}")
        if self.top_operators:
            name_width = min(60, max(len(op.name) for op in self.top_operators))
            lines.append("Top operators by self time:")
            for op in self.top_operators:
                name = op.name if len(op.name) <= name_width else op.name[: name_width - 3] + "..."
                lines.append(
                    f"  {name:<{name_width}}  {op.self_time_s * 1e3:10.3f} ms  "
                    f"{op.fraction:6.1%}  {op.calls:6d} calls"
                )
        if self.suggestions:
            lines.append("Suggestions:")
            lines.extend(f"  - {s}" for s in self.suggestions)
        else:
            lines.append("All figures are within their targets.")
        return "\n".join(lines)

    @property
    def _busy_low(self) -> bool:
        return self.wall_time_s > 0 and self.busy_fraction < BUSY_TARGET

    @property
    def _h2d_high(self) -> bool:
        return self.h2d_fraction > H2D_TARGET

    @property
    def _dataloader_high(self) -> bool:
        return self.dataloader_fraction > DATALOADER_TARGET

    @property
    def _optimizer_high(self) -> bool:
        return self.optimizer_fraction > OPTIMIZER_TARGET


def _union_length(intervals: Iterable[tuple[float, float]], lo: float, hi: float) -> float:
    """Total length covered by ``intervals`` clipped to ``[lo, hi]`` (overlaps count once)."""
    clipped = sorted((max(s, lo), min(e, hi)) for s, e in intervals if min(e, hi) > max(s, lo))
    total, cur_start, cur_end = 0.0, None, None
    for start, end in clipped:
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def _is_cpu(event: Any) -> bool:
    return str(event.device_type).rsplit(".", 1)[-1] == "CPU"


def _kind(event: Any) -> str:
    """Classify a FunctionEvent: cpu_op, annotation, kernel, memcpy or other.

    Uses kineto's activity type when torch reports it, else the device and name.
    """
    activity = getattr(event, "activity_type", None)
    if activity in ("cpu_op", "kernel", "gpu_memcpy"):
        return {"cpu_op": "cpu_op", "kernel": "kernel", "gpu_memcpy": "memcpy"}[activity]
    if activity in ("user_annotation", "gpu_user_annotation"):
        return "annotation"
    if activity is not None:
        return "other"
    if getattr(event, "is_user_annotation", False):
        return "annotation"
    if _is_cpu(event):
        return "other" if event.is_async else "cpu_op"
    if event.name.startswith("Memcpy"):
        return "memcpy"
    return "other" if event.name.startswith("Memset") else "kernel"


def _interval(event: Any) -> tuple[float, float]:
    return (event.time_range.start, event.time_range.end)  # microseconds


def _main_thread(events: Sequence[Any]) -> int | None:
    """The thread that ran the profiled loop: the one holding the step markers, else
    the one with the most host events (the training loop records nearly all of them)."""
    for event in events:
        if _is_cpu(event) and event.name.startswith(_STEP_PREFIX):
            return event.thread
    counts: dict[int, int] = {}
    for event in events:
        if _is_cpu(event):
            counts[event.thread] = counts.get(event.thread, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


def analyze(
    events: Sequence[Any],
    averages: Iterable[Any],
    *,
    device: str,
    measured_wall_s: float | None = None,
    top_k: int = 10,
) -> BottleneckReport:
    """Build the report from ``prof.events()`` and ``prof.key_averages()``.

    ``device`` is "cuda"/"xpu" when an accelerator activity was profiled, else "cpu".
    The wall time is the span of the ``ProfilerStep#`` markers when there are any,
    else the longer of ``measured_wall_s`` (the caller's clock around the region) and
    the span of all events.
    """
    events = [e for e in events if e.time_range.end >= e.time_range.start]
    # Host markers only: on CUDA kineto mirrors each one as a device annotation.
    steps = [e for e in events if _is_cpu(e) and e.name.startswith(_STEP_PREFIX)]
    window_events = steps or events
    if window_events:
        lo = min(e.time_range.start for e in window_events)
        hi = max(e.time_range.end for e in window_events)
    else:
        lo = hi = 0.0
    wall_us = hi - lo
    if not steps and measured_wall_s is not None:
        wall_us = max(wall_us, measured_wall_s * 1e6)

    def fraction(selected: Iterable[Any]) -> float:
        if wall_us <= 0:
            return 0.0
        return min(1.0, _union_length((_interval(e) for e in selected), lo, hi) / wall_us)

    main = _main_thread(events)
    on_main = [e for e in events if _is_cpu(e) and e.thread == main]
    if device == "cpu":
        busy = fraction(e for e in on_main if _kind(e) == "cpu_op")
        busy_label = "compute busy (torch ops, main thread)"
        h2d = 0.0
        h2d_label = "host-to-device copies (n/a on CPU)"
    else:
        busy = fraction(e for e in events if not _is_cpu(e) and _kind(e) == "kernel")
        busy_label = f"{device} busy (kernels)"
        h2d = fraction(
            e
            for e in events
            if not _is_cpu(e)
            and _kind(e) == "memcpy"
            and any(marker in e.name for marker in _H2D_MARKERS)
        )
        h2d_label = "host-to-device copies"
    dataloader = fraction(
        e for e in on_main if e.name.startswith(_DATALOADER_PREFIX) and e.name.endswith("__next__")
    )
    optimizer = fraction(e for e in on_main if e.name.startswith(_OPTIMIZER_PREFIXES))

    top = _top_operators(averages, device=device, wall_us=wall_us, top_k=top_k)
    report = BottleneckReport(
        device=device,
        wall_time_s=wall_us / 1e6,
        steps=len(steps) or None,
        busy_fraction=busy,
        busy_label=busy_label,
        h2d_fraction=h2d,
        h2d_label=h2d_label,
        dataloader_fraction=dataloader,
        optimizer_fraction=optimizer,
        top_operators=top,
    )
    return dataclasses.replace(report, suggestions=_suggestions(report))


def _top_operators(
    averages: Iterable[Any], *, device: str, wall_us: float, top_k: int
) -> list[OperatorStat]:
    """The ``top_k`` rows of torch's own aggregation, by self device time on accelerator
    runs and self CPU time otherwise; the step markers are left out (they are the step)."""

    def self_time(avg: Any) -> float:
        if device == "cpu":
            return avg.self_cpu_time_total
        return getattr(avg, "self_device_time_total", 0.0)

    rows = [a for a in averages if not a.key.startswith(_STEP_PREFIX) and self_time(a) > 0]
    rows.sort(key=self_time, reverse=True)
    return [
        OperatorStat(
            name=a.key,
            calls=int(a.count),
            self_time_s=self_time(a) / 1e6,
            fraction=self_time(a) / wall_us if wall_us > 0 else 0.0,
        )
        for a in rows[:top_k]
    ]


def _suggestions(report: BottleneckReport) -> list[str]:
    """One line per figure out of its target, most actionable first."""
    out = []
    if report._dataloader_high:
        out.append(
            f"data loader waits {report.dataloader_fraction:.0%} of the step: raise "
            "num_workers, use pin_memory=True/persistent_workers=True, or preprocess offline"
        )
    if report._h2d_high:
        out.append(
            f"host-to-device copies take {report.h2d_fraction:.0%} of the step: use "
            "pin_memory=True with .to(device, non_blocking=True), keep reused data on the device"
        )
    if report._optimizer_high:
        out.append(
            f"optimizer takes {report.optimizer_fraction:.0%} of the step: use a foreach=True "
            "or fused=True optimizer, or flatten many small parameters"
        )
    if report._busy_low:
        if report.device == "cpu":
            out.append(
                f"compute busy only {report.busy_fraction:.0%} of the step: time goes to Python "
                "overhead, data loading or logging; raise the batch size or try ds.compile"
            )
        else:
            out.append(
                f"{report.device} busy only {report.busy_fraction:.0%} of the step: the host is "
                "the bottleneck; raise the batch size, overlap data loading, or try ds.compile"
            )
    return out
