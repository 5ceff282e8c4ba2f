"""The built-in callbacks, each driven by a real ``Trainer`` on a tiny model."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepseek.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    Profiler,
    ProgressBar,
)
from deepseek.checkpoint import load_checkpoint, load_weights
from deepseek.checkpoint.format import read_meta
from deepseek.profiler import BottleneckReport
from deepseek.training import Trainer


def make_data(n: int = 16, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def make_trainer(tmp_path: Path, callbacks=(), model: nn.Module | None = None, **kwargs) -> Trainer:
    """16 samples in batches of 4: 4 micro-batches per epoch."""
    torch.manual_seed(0)
    options = {
        "optimizer": torch.optim.SGD,
        "optimizer_kwargs": {"lr": 0.1},
        "train_data": make_data(),
        "batch_size": 4,
        "loss_fn": nn.functional.cross_entropy,
        "precision": "fp32",
        "enable_progress_bar": False,
        "default_root_dir": tmp_path,
        "seed": 0,
        "callbacks": list(callbacks),
        **kwargs,
    }
    return Trainer(model if model is not None else nn.Linear(4, 2), **options)


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


class FakeTTY(io.StringIO):
    """A stderr that says it is a terminal, so ``enabled=None`` decides by ``CI`` alone."""

    def isatty(self) -> bool:
        return True


# ---- ProgressBar -----------------------------------------------------------------------


def test_progress_bar_shows_epoch_loss_and_throughput(tmp_path, capsys):
    make_trainer(tmp_path, [ProgressBar(enabled=True)], max_epochs=2).fit()
    err = capsys.readouterr().err
    assert "epoch 0" in err and "epoch 1" in err
    assert "4/4" in err
    assert "loss=" in err and "samples_s=" in err


def test_progress_bar_shows_validation_results_at_epoch_end(tmp_path, capsys):
    make_trainer(tmp_path, [ProgressBar(enabled=True)], val_data=make_data(8, seed=1)).fit()
    assert "val_loss=" in capsys.readouterr().err


@pytest.mark.parametrize("ci", [None, "1"])
def test_progress_bar_default_is_silent_in_ci(tmp_path, monkeypatch, ci):
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    make_trainer(tmp_path, [ProgressBar()]).fit()
    if ci is None:
        assert "epoch 0" in tty.getvalue()
    else:
        assert tty.getvalue() == ""


def test_trainer_adds_a_progress_bar_only_when_enabled(tmp_path):
    def bars(trainer):
        return [cb for cb in trainer.callbacks if isinstance(cb, ProgressBar)]

    assert len(bars(make_trainer(tmp_path, enable_progress_bar=True))) == 1
    assert bars(make_trainer(tmp_path, enable_progress_bar=False)) == []
    mine = ProgressBar(enabled=False)
    assert bars(make_trainer(tmp_path, [mine], enable_progress_bar=True)) == [mine]
    named = make_trainer(tmp_path, ["progress_bar"], enable_progress_bar=True)
    assert len(bars(named)) == 1


def test_trainer_does_not_add_a_second_bar_next_to_a_subclass(tmp_path):
    class MyBar(ProgressBar):
        """A user's own bar: the Trainer must not add its default one beside it."""

    mine = MyBar(enabled=False)
    trainer = make_trainer(tmp_path, [mine], enable_progress_bar=True)
    assert [cb for cb in trainer.callbacks if isinstance(cb, ProgressBar)] == [mine]


def test_progress_bar_rejects_a_zero_refresh_interval():
    with pytest.raises(ValueError, match="refresh_every_n_steps"):
        ProgressBar(refresh_every_n_steps=0)


def test_progress_bar_on_resume_starts_at_the_restored_batch(tmp_path, capsys):
    saver = ModelCheckpoint(tmp_path / "ck" / "step_{step}", save_freq=1)
    make_trainer(tmp_path, [saver], max_steps=2).fit()
    capsys.readouterr()
    resumed = make_trainer(tmp_path, [ProgressBar(enabled=True)], max_epochs=2)
    resumed.fit(resume=tmp_path / "ck" / "step_2")
    assert resumed.global_step == 8
    frames = [f for f in capsys.readouterr().err.replace("\n", "\r").split("\r") if f.strip()]
    first = [f for f in frames if f.startswith("epoch 0")]
    second = [f for f in frames if f.startswith("epoch 1")]
    # tqdm's first frame is its `initial`: the resumed epoch picks up at batch 2 of 4.
    assert "2/4" in first[0] and "4/4" in first[-1]
    assert not any(f"{i}/4" in f for f in first for i in (0, 1))
    assert "0/4" in second[0] and "4/4" in second[-1]


# ---- LearningRateMonitor ---------------------------------------------------------------


class RecordLR(Callback):
    """The lr metrics as they stand after each optimizer step's callbacks ran."""

    def __init__(self):
        self.seen: list[tuple[float, float | None]] = []

    def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
        self.seen.append((trainer.metrics["lr"], trainer.metrics.get("lr-group1")))


def test_lr_monitor_follows_step_lr(tmp_path):
    record = RecordLR()
    trainer = make_trainer(
        tmp_path,
        [LearningRateMonitor(), record],
        max_steps=6,
        scheduler=torch.optim.lr_scheduler.StepLR,
        scheduler_kwargs={"step_size": 2, "gamma": 0.5},
    )
    trainer.fit()
    expected = [0.1 * 0.5 ** (step // 2) for step in range(6)]
    assert [lr for lr, _ in record.seen] == pytest.approx(expected)
    assert all(group1 is None for _, group1 in record.seen)


def test_lr_monitor_second_group_and_csv_columns(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.01}],
        lr=0.1,
    )
    decay = lambda step: 1.0 / (step + 1)  # noqa: E731
    record, logger = RecordLR(), CSVLogger(log_every_n_steps=1)
    trainer = make_trainer(
        tmp_path,
        [LearningRateMonitor(), record, logger],
        model=model,
        optimizer=optimizer,
        optimizer_kwargs=None,
        max_epochs=2,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, decay),
    )
    trainer.fit()
    assert record.seen == pytest.approx([(0.1 * decay(s), 0.01 * decay(s)) for s in range(8)])
    columns, rows = read_rows(logger.path)
    assert {"lr", "lr-group1"} <= set(columns)
    # The row of step s was logged after the optimizer step that used decay(s - 1).
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    for row in rows:
        step = int(row["step"])
        assert float(row["lr"]) == pytest.approx(0.1 * decay(step - 1))
        assert float(row["lr-group1"]) == pytest.approx(0.01 * decay(step - 1))


# ---- CSVLogger -------------------------------------------------------------------------


@pytest.mark.parametrize(("every", "accumulate"), [(3, 1), (2, 2)])
def test_csv_logger_logs_every_n_optimizer_steps(tmp_path, every, accumulate):
    logger = CSVLogger(tmp_path / "logs", log_every_n_steps=every)
    trainer = make_trainer(
        tmp_path, [logger], max_epochs=3, accumulate_grad_batches=accumulate, batch_size=2
    )
    trainer.fit()
    steps_total = trainer.global_step
    assert steps_total == 3 * 8 // accumulate
    _, rows = read_rows(tmp_path / "logs" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(every, steps_total + 1, every))
    assert all(r["train_loss"] != "" for r in rows)


def test_csv_logger_validation_rows_and_default_dir(tmp_path):
    logger = CSVLogger(log_every_n_steps=2)
    trainer = make_trainer(
        tmp_path, [logger], max_epochs=2, val_data=make_data(8, seed=1), metrics=["accuracy"]
    )
    trainer.fit()
    assert logger.path == tmp_path / "metrics.csv"
    columns, rows = read_rows(tmp_path / "metrics.csv")
    assert columns[:2] == ["epoch", "step"]
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(columns)
    val_rows = [r for r in rows if r["val_loss"] != ""]
    train_rows = [r for r in rows if r["val_loss"] == ""]
    assert [(int(r["epoch"]), int(r["step"])) for r in val_rows] == [(0, 4), (1, 8)]
    assert all(r["train_loss"] == "" for r in val_rows)
    assert all(r["val_accuracy"] == "" for r in train_rows)
    assert [int(r["step"]) for r in train_rows] == [2, 4, 6, 8]
    assert float(val_rows[-1]["val_loss"]) == pytest.approx(trainer.metrics["val_loss"])
    assert float(val_rows[-1]["val_accuracy"]) == pytest.approx(trainer.metrics["val_accuracy"])


def test_csv_logger_file_is_complete_after_every_epoch(tmp_path):
    logger = CSVLogger(log_every_n_steps=1)
    snapshots = []

    class ReadBack(Callback):  # runs after the logger's own on_train_epoch_end
        def on_train_epoch_end(self, trainer):
            snapshots.append((trainer.global_step, read_rows(logger.path)))

    make_trainer(tmp_path, [logger, ReadBack()], max_epochs=3).fit()
    assert [step for step, _ in snapshots] == [4, 8, 12]
    for step, (columns, rows) in snapshots:
        assert columns[:2] == ["epoch", "step"] and "train_loss" in columns
        assert [int(r["step"]) for r in rows] == list(range(1, step + 1))
        assert all(len(r) == len(columns) and None not in r for r in rows)
    # Atomic rewrites leave no temporary files behind.
    assert sorted(p.name for p in tmp_path.iterdir() if "metrics" in p.name) == ["metrics.csv"]


def test_csv_logger_rejects_bad_interval_and_is_registered(tmp_path):
    with pytest.raises(ValueError, match="log_every_n_steps"):
        CSVLogger(log_every_n_steps=0)
    trainer = make_trainer(tmp_path, [{"name": "csv_logger", "log_every_n_steps": 4}])
    trainer.fit()
    _, rows = read_rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [4]


# ---- EarlyStopping ---------------------------------------------------------------------


def test_early_stopping_state_survives_a_full_checkpoint(tmp_path):
    def stopper():
        # Only the first validation can improve, so `wait` counts validations after it.
        return EarlyStopping(monitor="val_loss", patience=3, min_delta=1e9)

    val = make_data(8, seed=1)
    reference = stopper()
    make_trainer(tmp_path / "ref", [reference], max_epochs=10, val_data=val).fit()
    assert reference.stopped_epoch == 3

    first = stopper()
    saver = ModelCheckpoint(tmp_path / "ck" / "epoch_{epoch}")
    make_trainer(tmp_path, [first, saver], max_epochs=2, val_data=val).fit()
    assert (first.wait, first.stopped_epoch) == (1, None)
    saved = load_checkpoint(tmp_path / "ck" / "epoch_2").trainer_state["callbacks"]
    assert saved["EarlyStopping"] == {"best": first.best, "wait": 1, "stopped_epoch": None}

    resumed = stopper()
    trainer = make_trainer(tmp_path, [resumed], max_epochs=10, val_data=val)
    trainer.fit(resume=tmp_path / "ck" / "epoch_2")
    # Without the restored wait counter it would run 3 more validations (to epoch 4).
    assert resumed.stopped_epoch == reference.stopped_epoch == 3
    assert trainer.current_epoch == 4
    assert resumed.best == first.best == reference.best


class Scored(nn.Module):
    """Validation logs ``val_score`` from a fixed sequence, one value per validation."""

    def __init__(self, scores):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.scores = list(scores)
        self.validations = 0

    def training_step(self, batch):
        x, y = batch
        return nn.functional.cross_entropy(self.linear(x), y)

    def validation_step(self, batch):
        score = self.scores[self.validations]
        self.validations += 1
        return {"loss": torch.tensor(0.0), "score": torch.tensor(score, dtype=torch.float64)}


@pytest.mark.parametrize(
    ("mode", "min_delta", "scores", "stop_epoch", "best"),
    [
        ("max", 0.0, [0.1, 0.5, 0.4, 0.45, 0.3, 0.9], 3, 0.5),
        ("min", 0.0, [0.1, 0.5, 0.4, 0.45, 0.3, 0.9], 2, 0.1),
        # Gains below min_delta are not improvements (without it, each of these is one).
        ("max", 0.2, [0.1, 0.25, 0.28, 0.9, 1.0, 1.1], 2, 0.1),
    ],
)
def test_early_stopping_modes(tmp_path, mode, min_delta, scores, stop_epoch, best):
    stopper = EarlyStopping(monitor="val_score", mode=mode, patience=2, min_delta=min_delta)
    trainer = make_trainer(
        tmp_path,
        [stopper],
        model=Scored(scores),
        loss_fn=None,
        max_epochs=len(scores),
        val_data=make_data(4, seed=1),
    )
    trainer.fit()
    assert stopper.stopped_epoch == stop_epoch
    assert trainer.current_epoch == stop_epoch + 1
    assert stopper.best == pytest.approx(best)


def test_early_stopping_on_a_metric_that_is_not_logged(tmp_path):
    trainer = make_trainer(
        tmp_path, [EarlyStopping(monitor="val_acc")], val_data=make_data(8, seed=1)
    )
    with pytest.raises(KeyError, match=r"monitors 'val_acc'.*logged: \['train_loss', 'val_loss'\]"):
        trainer.fit()
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="avg")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)


# ---- ModelCheckpoint -------------------------------------------------------------------


def test_save_freq_counts_optimizer_steps_not_micro_batches(tmp_path):
    # 8 micro-batches per epoch, 2 per optimizer step: 4 steps per epoch, 8 in all.
    cb = ModelCheckpoint(save_freq=3)
    trainer = make_trainer(tmp_path, [cb], max_epochs=2, batch_size=2, accumulate_grad_batches=2)
    trainer.fit()
    assert trainer.global_step == 8
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["epoch_0-step_3", "epoch_1-step_6"]
    for name, step in (("epoch_0-step_3", 3), ("epoch_1-step_6", 6)):
        meta = read_meta(root / name)
        assert meta["kind"] == "full" and meta["metadata"]["global_step"] == step


def test_save_top_k_without_monitor_keeps_the_newest(tmp_path):
    cb = ModelCheckpoint(tmp_path / "ck" / "step_{step}", save_freq=1, save_top_k=2)
    make_trainer(tmp_path, [cb], max_steps=5).fit()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step_4", "step_5"]
    assert [Path(p).name for p, _ in cb.saved] == ["step_4", "step_5"]
    assert Path(cb.best_model_path).name == "step_5"
    assert Path(cb.last_model_path).name == "step_5"


def test_save_last_tracks_the_final_step(tmp_path):
    cb = ModelCheckpoint(tmp_path / "ck" / "epoch_{epoch}", save_top_k=1, save_last=True)
    trainer = make_trainer(tmp_path, [cb], max_epochs=3)
    trainer.fit()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["epoch_3", "last"]
    meta = read_meta(tmp_path / "ck" / "last")
    assert meta["kind"] == "full"
    assert meta["metadata"]["global_step"] == trainer.global_step == 12
    fresh = nn.Linear(4, 2)
    load_weights(fresh, tmp_path / "ck" / "last")
    for a, b in zip(fresh.parameters(), trainer.model.parameters()):
        assert torch.equal(a, b)


def test_model_checkpoint_by_registry_name(tmp_path):
    trainer = make_trainer(tmp_path, [{"name": "model_checkpoint", "save_freq": 2}], max_steps=4)
    [cb] = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert cb.save_freq == 2
    trainer.fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["epoch_0-step_2", "epoch_0-step_4"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"save_freq": 0}, "save_freq must be 'epoch' or a positive int"),
        ({"save_freq": "step"}, "save_freq must be 'epoch' or a positive int"),
        ({"save_freq": True}, "save_freq must be 'epoch' or a positive int"),
        ({"mode": "avg"}, "mode must be 'auto', 'min' or 'max'"),
        ({"save_top_k": 0}, "save_top_k must be -1"),
        ({"save_top_k": -2}, "save_top_k must be -1"),
        ({"filepath": "ck/{epoch"}, "invalid ModelCheckpoint filepath template"),
    ],
)
def test_model_checkpoint_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelCheckpoint(**kwargs)
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, [{"name": "model_checkpoint", **kwargs}])


# ---- Profiler --------------------------------------------------------------------------


def test_profiler_traces_the_requested_steps_of_a_real_fit(tmp_path):
    cb = Profiler(start_step=2, end_step=3, summary=False)
    make_trainer(tmp_path, [cb], max_steps=6).fit()
    assert cb.trace_path == tmp_path / "profiler" / "trace.json"
    trace = json.loads(cb.trace_path.read_text())
    assert isinstance(trace["traceEvents"], list)
    names = {e.get("name", "") for e in trace["traceEvents"]}
    markers = {n for n in names if n.startswith("ProfilerStep#")}
    assert markers == {"ProfilerStep#2", "ProfilerStep#3"}
    assert isinstance(cb.report, BottleneckReport)
    assert cb.report.steps == 2
    # The window holds the Trainer's optimizer steps, so the report attributes time to them.
    assert 0.0 < cb.report.optimizer_fraction <= 1.0


# ---- the hook protocol -----------------------------------------------------------------

HOOKS = [n for n in vars(Callback) if n.startswith("on_") or n in ("setup", "teardown")]


class Recorder(Callback):
    """Records every hook call; setup/teardown with their stage."""

    def __init__(self):
        self.calls: list[str] = []


def _recording(hook: str):
    def method(self, trainer, *args):
        self.calls.append(f"{hook}:{args[0]}" if hook in ("setup", "teardown") else hook)

    return method


for _hook in HOOKS:
    setattr(Recorder, _hook, _recording(_hook))


def test_hooks_run_in_the_documented_order(tmp_path):
    recorder = Recorder()
    # 8 samples in batches of 4: two batches, then one validation.
    trainer = make_trainer(
        tmp_path, [recorder], train_data=make_data(8), val_data=make_data(4, seed=1)
    )
    trainer.fit()
    batch = [
        "on_train_batch_start",
        "on_train_loss",
        "on_before_optimizer_step",
        "on_train_batch_end",
    ]
    assert recorder.calls == [
        "setup:fit",
        "on_fit_start",
        "on_train_epoch_start",
        *batch,
        *batch,
        "on_validation_start",
        "on_validation_end",
        "on_train_epoch_end",
        "on_fit_end",
        "teardown:fit",
    ]
    recorder.calls.clear()
    trainer.validate()
    assert recorder.calls == [
        "setup:validate",
        "on_validation_start",
        "on_validation_end",
        "teardown:validate",
    ]


def test_on_exception_sees_the_loss_error_then_teardown(tmp_path):
    failure = RuntimeError("loss exploded")

    def bad_loss(output, target):
        raise failure

    seen = []

    class Catch(Recorder):
        def on_exception(self, trainer, exception):
            seen.append(exception)
            self.calls.append("on_exception")

    recorder = Catch()
    trainer = make_trainer(tmp_path, [recorder], loss_fn=bad_loss)
    with pytest.raises(RuntimeError, match="loss exploded"):
        trainer.fit()
    assert seen == [failure]
    assert recorder.calls == [
        "setup:fit",
        "on_fit_start",
        "on_train_epoch_start",
        "on_train_batch_start",
        "on_exception",
        "teardown:fit",
    ]
