"""deepseek.profiler and the Profiler callback, on real torch profiles of tiny workloads.

The workloads are built so one figure must dominate (a sleeping dataset, an optimizer
over hundreds of parameters, back-to-back matmuls); the tests assert the resulting
ordering and targets, never absolute timings.
"""

from __future__ import annotations

import gzip
import json
import time
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import deepseek as ds
from deepseek.callbacks.profiler import Profiler
from deepseek.profiler import (
    BUSY_TARGET,
    DATALOADER_TARGET,
    OPTIMIZER_TARGET,
    BottleneckReport,
)
from deepseek.profiler.report import _union_length

FRACTIONS = ("busy_fraction", "h2d_fraction", "dataloader_fraction", "optimizer_fraction")


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


class SleepyDataset(Dataset):
    """Each item costs a sleep: the loop waits on the data loader far more than it computes."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        time.sleep(0.004)
        return torch.randn(8), torch.randn(1)


def _names_in_trace(path) -> set[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    assert isinstance(trace["traceEvents"], list)
    return {e.get("name", "") for e in trace["traceEvents"]}


def _assert_fractions_valid(report: BottleneckReport) -> None:
    for name in FRACTIONS:
        assert 0.0 <= getattr(report, name) <= 1.0, (name, report)


def test_snippet_from_the_issue(capsys):
    model = _mlp()

    def train_step():
        model(torch.randn(4, 8)).sum().backward()

    with ds.profiler.profile() as prof:
        train_step()
    print(prof.key_averages().table())

    out = capsys.readouterr().out
    assert "Self CPU" in out and "aten::addmm" in out


def test_default_activities_follow_the_machine():
    activities = ds.profiler.default_activities()
    assert ds.profiler.ProfilerActivity.CPU in activities
    assert (ds.profiler.ProfilerActivity.CUDA in activities) == torch.cuda.is_available()
    if torch.cuda.is_available():
        assert ds.profiler.profile().device == "cuda"
    elif ds.profiler.ProfilerActivity.CPU in activities and len(activities) == 1:
        assert ds.profiler.profile().device == "cpu"


def test_reexports_are_torchs_own():
    assert ds.profiler.record_function is torch.profiler.record_function
    assert ds.profiler.ProfilerActivity is torch.profiler.ProfilerActivity
    assert ds.profiler.schedule is torch.profiler.schedule
    assert ds.profiler.tensorboard_trace_handler is torch.profiler.tensorboard_trace_handler


def test_data_loader_bound_loop_reports_data_loader_wait(capsys):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(SleepyDataset(), batch_size=4)

    with ds.profiler.profile() as prof:
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    report = prof.summary()

    _assert_fractions_valid(report)
    # Sleeping in __getitem__ is neither torch compute nor optimizer work.
    assert report.dataloader_fraction > max(0.5, DATALOADER_TARGET)
    assert report.dataloader_fraction > report.optimizer_fraction
    assert report.busy_fraction < BUSY_TARGET
    assert any(s.startswith("data loader waits") for s in report.suggestions)
    assert any("num_workers" in s for s in report.suggestions)
    assert "data-loader wait" in str(report)
    assert report.top_operators[0].name.startswith("enumerate(DataLoader)")


def test_optimizer_bound_loop_reports_optimizer():
    model = torch.nn.Linear(2, 1)
    # Hundreds of extra parameters with gradients: step() dwarfs the tiny forward/backward.
    extra = [torch.nn.Parameter(torch.zeros(4)) for _ in range(400)]
    for p in extra:
        p.grad = torch.ones(4)
    opt = torch.optim.SGD([*model.parameters(), *extra], lr=0.1, momentum=0.9, foreach=False)

    with ds.profiler.profile() as prof:
        for _ in range(3):
            model(torch.randn(2, 2)).sum().backward()
            opt.step()
    report = prof.summary(top_k=3)

    _assert_fractions_valid(report)
    assert report.optimizer_fraction > OPTIMIZER_TARGET
    assert report.dataloader_fraction == 0.0
    assert any(s.startswith("optimizer takes") for s in report.suggestions)
    assert len(report.top_operators) == 3


def test_compute_bound_loop_is_busier_than_a_sleeping_one():
    a = torch.randn(128, 128)
    a @ a  # warm up the thread pool outside the profiled regions

    def busy_region():
        with ds.profiler.profile() as prof:
            for _ in range(20):
                a @ a
        return prof.summary()

    def idle_region():
        with ds.profiler.profile() as prof:
            for _ in range(5):
                torch.ones(2).sum()
                time.sleep(0.01)
        return prof.summary()

    busy, idle = busy_region(), idle_region()
    assert busy.busy_fraction > idle.busy_fraction
    assert idle.busy_fraction < BUSY_TARGET
    if not torch.cuda.is_available():
        assert busy.h2d_fraction == 0.0 and "compute busy" in busy.busy_label
        assert "n/a on CPU" in busy.h2d_label


def test_union_counts_nested_and_overlapping_intervals_once():
    intervals = [(0.0, 10.0), (2.0, 5.0), (8.0, 12.0), (20.0, 25.0)]
    assert _union_length(intervals, 0.0, 100.0) == 17.0
    assert _union_length(intervals, 3.0, 22.0) == 11.0  # clipped to the window
    assert _union_length([], 0.0, 1.0) == 0.0


def test_accelerator_figures_from_device_events():
    # No GPU here: feed analyze() torch's own FunctionEvent objects laid out the way
    # kineto reports a CUDA step, to check the accelerator branch of the report.
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent

    from deepseek.profiler.report import analyze

    def event(name, start, end, activity, device=DeviceType.CUDA, thread=7):
        return FunctionEvent(
            id=0,
            name=name,
            thread=thread,
            start_us=start,
            end_us=end,
            device_type=device,
            activity_type=activity,
            is_user_annotation=activity.endswith("user_annotation"),
        )

    events = [
        event("ProfilerStep*", 0, 1000, "user_annotation", DeviceType.CPU, thread=1),
        event("Optimizer.step#AdamW.step", 800, 900, "user_annotation", DeviceType.CPU, 1),
        event("ProfilerStep#0", 0, 1000, "gpu_user_annotation"),  # spans gaps: ignored
        event("ampere_sgemm", 100, 400, "kernel"),
        event("elementwise", 300, 600, "kernel"),  # overlaps the first: counted once
        event("Memcpy HtoD (Pageable -> Device)", 700, 760, "gpu_memcpy"),
        event("Memcpy DtoH (Device -> Pageable)", 760, 800, "gpu_memcpy"),
    ]
    report = analyze(events, [], device="cuda")
    assert report.steps == 1 and report.wall_time_s == pytest.approx(1e-3)
    assert report.busy_fraction == pytest.approx(0.5)
    assert report.h2d_fraction == pytest.approx(0.06)
    assert report.optimizer_fraction == pytest.approx(0.1)
    assert report.busy_label == "cuda busy (kernels)"
    assert [s.split(" ")[0] for s in report.suggestions] == ["host-to-device", "cuda"]


def test_nested_annotations_are_not_double_counted():
    # Optimizer.step inside an outer Optimizer-named annotation: a sum would exceed the
    # optimizer's real share, the union cannot exceed the wall time.
    p = torch.nn.Parameter(torch.zeros(64))
    p.grad = torch.ones(64)
    opt = torch.optim.SGD([p], lr=0.1)
    with ds.profiler.profile() as prof:
        for _ in range(5):
            with ds.profiler.record_function("Optimizer.step#outer"):
                opt.step()
    report = prof.summary()
    _assert_fractions_valid(report)
    assert report.optimizer_fraction > 0.0


def test_report_to_dict_and_text():
    with ds.profiler.profile() as prof:
        torch.randn(32, 32).relu()
    report = prof.summary()
    data = report.to_dict()
    json.dumps(data)  # plain data
    assert set(FRACTIONS) <= set(data)
    assert data["busy_fraction"] == report.busy_fraction
    assert data["top_operators"][0]["name"] == report.top_operators[0].name
    text = str(report)
    assert "Bottleneck report" in text and "target > 75%" in text and "target < 10%" in text


def test_export_chrome_trace_is_atomic_and_valid(tmp_path):
    with ds.profiler.profile() as prof, ds.profiler.record_function("marker_block"):
        torch.randn(8).sum()
    path = prof.export_chrome_trace(tmp_path / "sub" / "t.json")
    assert "marker_block" in _names_in_trace(path)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["t.json"]  # no temp left
    with pytest.raises(RuntimeError, match="already exported to"):
        prof.export_chrome_trace(tmp_path / "again.json")


def test_export_chrome_trace_gzipped(tmp_path):
    with ds.profiler.profile() as prof, ds.profiler.record_function("marker_block"):
        torch.randn(8).sum()
    gz = prof.export_chrome_trace(tmp_path / "t.json.gz")
    assert "marker_block" in _names_in_trace(gz)
    assert [p.name for p in tmp_path.iterdir()] == ["t.json.gz"]


def test_schedule_hands_the_wrapper_to_on_trace_ready(tmp_path):
    seen = []
    handler = ds.profiler.tensorboard_trace_handler(str(tmp_path / "tb"))

    def ready(prof):
        seen.append(prof.summary())
        handler(prof)

    sched = ds.profiler.schedule(wait=1, warmup=1, active=2, repeat=1)
    with ds.profiler.profile(schedule=sched, on_trace_ready=ready) as prof:
        for _ in range(5):
            torch.randn(16, 16).sum()
            prof.step()
    assert len(seen) == 1
    assert seen[0].steps == 2
    assert len(list((tmp_path / "tb").glob("*.json"))) == 1


def test_profile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="activities is empty"):
        ds.profiler.profile(activities=[])
    with pytest.raises(TypeError, match="list of ProfilerActivity"):
        ds.profiler.profile(activities="cpu")
    with pytest.raises(TypeError, match="ProfilerActivity members"):
        ds.profiler.profile(activities=["cpu"])
    with pytest.raises(TypeError, match="unknown argument"):
        ds.profiler.profile(with_flopz=True)
    with pytest.raises(TypeError, match="schedule must be callable"):
        ds.profiler.profile(schedule=3)
    with pytest.raises(RuntimeError, match="needs recorded events"):
        ds.profiler.profile().summary()
    with ds.profiler.profile() as prof:
        torch.ones(2).sum()
    with pytest.raises(ValueError, match="top_k"):
        prof.summary(top_k=-1)


# ---- the callback, driven the way a trainer drives it ----------------------------


def _fake_trainer(tmp_path, is_global_zero=True):
    return SimpleNamespace(
        global_step=0, default_root_dir=str(tmp_path), is_global_zero=is_global_zero
    )


def _run(callback, trainer, steps, accumulate=1):
    """A minimal trainer loop: hooks in a trainer's order, global_step = optimizer steps."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    callback.on_fit_start(trainer)
    for batch_idx in range(steps * accumulate):
        batch = torch.randn(4, 8)
        callback.on_train_batch_start(trainer, batch, batch_idx)
        with torch.profiler.record_function(f"body_of_step_{trainer.global_step}"):
            model(batch).sum().backward()
            if (batch_idx + 1) % accumulate == 0:
                opt.step()
                opt.zero_grad()
                trainer.global_step += 1
        callback.on_train_batch_end(trainer, {"loss": torch.tensor(0.0)}, batch, batch_idx)
    callback.on_fit_end(trainer)
    callback.teardown(trainer, "fit")


def test_callback_traces_exactly_the_requested_steps(tmp_path, capsys):
    trainer = _fake_trainer(tmp_path)
    cb = Profiler(start_step=2, end_step=4)
    _run(cb, trainer, steps=7)

    assert cb.trace_path == tmp_path / "profiler" / "trace.json"
    names = _names_in_trace(cb.trace_path)
    for step in range(7):
        inside = 2 <= step <= 4
        assert (f"ProfilerStep#{step}" in names) == inside, step
        assert (f"body_of_step_{step}" in names) == inside, step
    assert cb.report is not None and cb.report.steps == 3
    _assert_fractions_valid(cb.report)
    out = capsys.readouterr().out
    assert "Bottleneck report" in out and str(cb.trace_path) in out


def test_callback_with_gradient_accumulation_marks_optimizer_steps(tmp_path):
    trainer = _fake_trainer(tmp_path)
    cb = Profiler(start_step=1, end_step=2, dirpath=tmp_path / "out", filename="p.json.gz")
    _run(cb, trainer, steps=4, accumulate=2)
    assert cb.trace_path == tmp_path / "out" / "p.json.gz"
    names = _names_in_trace(cb.trace_path)
    assert {"ProfilerStep#1", "ProfilerStep#2"} <= names
    assert not {"ProfilerStep#0", "ProfilerStep#3"} & names
    assert cb.report.steps == 2


def test_callback_run_ending_inside_the_window_keeps_the_partial_trace(tmp_path):
    trainer = _fake_trainer(tmp_path)
    cb = Profiler(start_step=1, end_step=10, summary=False)
    _run(cb, trainer, steps=3)
    names = _names_in_trace(cb.trace_path)
    assert {"ProfilerStep#1", "ProfilerStep#2"} <= names and "ProfilerStep#0" not in names


def test_callback_window_never_reached_writes_nothing(tmp_path):
    trainer = _fake_trainer(tmp_path)
    cb = Profiler(start_step=5, end_step=6)
    _run(cb, trainer, steps=3)
    assert cb.report is None and cb.trace_path is None
    assert not (tmp_path / "profiler").exists()


def test_callback_prints_only_on_global_zero(tmp_path, capsys):
    trainer = _fake_trainer(tmp_path, is_global_zero=False)
    cb = Profiler(start_step=0, end_step=0)
    _run(cb, trainer, steps=2)
    assert cb.report is not None and cb.trace_path.is_file()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"start_step": 3, "end_step": 1}, ValueError, "must be <= end_step"),
        ({"start_step": -1}, ValueError, "start_step must be an int >= 0"),
        ({"end_step": 2.5}, ValueError, "end_step must be an int >= 0"),
        ({"start_step": True}, ValueError, "start_step must be an int"),
        ({"filename": "sub/trace.json"}, ValueError, "plain file name"),
        ({"filename": "trace.txt"}, ValueError, "ending in .json"),
        ({"dirpath": 3}, TypeError, "dirpath must be a path"),
        ({"summary": "yes"}, TypeError, "summary must be True or False"),
    ],
)
def test_callback_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Profiler(**kwargs)
