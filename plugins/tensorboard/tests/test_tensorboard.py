"""Tests of deepseek-tensorboard: real Trainer fits, event files read back with
TensorBoard's own EventAccumulator. Only DeepSeek's public API is used."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from deepseek_tensorboard import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

import deepseek as ds
from deepseek.callbacks import Callback, Profiler
from deepseek.plugins import registry

STEPS_PER_EPOCH = 4  # 16 samples, batch 4


def deepseek(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deepseek.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def tiny_data(seed: int = 0) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=generator)
    return torch.utils.data.TensorDataset(x, (x.sum(dim=1) > 0).long())


class Recorder(Callback):
    """What the Trainer itself reports, step by step (listed after the logger)."""

    def __init__(self) -> None:
        self.train: dict[int, dict[str, float]] = {}
        self.val: dict[int, dict[str, float]] = {}
        self.lrs: dict[int, list[float]] = {}
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_before_optimizer_step(self, trainer, optimizer):
        self.lrs[trainer.global_step + 1] = [g["lr"] for g in optimizer.param_groups]

    def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
        if trainer.optimizer_stepped:
            step = trainer.global_step
            self.train[step] = {
                k: v for k, v in trainer.metrics.items() if not k.startswith(("val_", "test_"))
            }
            self.weights[step] = {
                n: p.detach().clone() for n, p in trainer.model.named_parameters()
            }

    def on_validation_end(self, trainer):
        self.val[trainer.global_step] = {
            k: v for k, v in trainer.metrics.items() if k.startswith("val_")
        }


class CrashAt(Callback):
    """Saves a full checkpoint after the validation at ``save_step`` (as ModelCheckpoint
    does at an epoch end) and raises at ``crash_step``."""

    def __init__(self, save_to: Path, save_step: int, crash_step: int) -> None:
        self.save_to, self.save_step, self.crash_step = save_to, save_step, crash_step

    def on_validation_end(self, trainer):
        if trainer.global_step == self.save_step:
            trainer.save_checkpoint(self.save_to)

    def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
        if trainer.optimizer_stepped and trainer.global_step == self.crash_step:
            raise RuntimeError("simulated crash")


def make_trainer(tmp_path: Path, callbacks: list[Callback], max_epochs: int = 2, **options):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.05}]
    )
    return ds.Trainer(
        model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5),
        scheduler_interval="step",
        train_data=tiny_data(),
        val_data=tiny_data(1),
        batch_size=4,
        max_epochs=max_epochs,
        loss_fn=torch.nn.functional.cross_entropy,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
        seed=0,
        callbacks=callbacks,
        **options,
    )


def read_events(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(
        str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0}
    )
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> dict[int, float]:
    steps = [e.step for e in events.Scalars(tag)]
    assert len(steps) == len(set(steps)), f"{tag}: a step logged twice: {steps}"
    return {e.step: e.value for e in events.Scalars(tag)}


def close(a: float, b: float) -> bool:  # event files store float32
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)


def test_plugin_passes_deepseek_plugins_check() -> None:
    result = deepseek("plugins", "--check", "tensorboard")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tensorboard  (deepseek-tensorboard" in result.stdout


def test_created_by_name_with_yaml_options(tmp_path) -> None:
    provider = registry("callback").provider("tensorboard")
    assert provider.distribution == "deepseek-tensorboard"
    assert "TensorBoard" in registry("callback").get("tensorboard").description
    # What `callbacks: [{name: tensorboard, log_dir: ..., histogram_every_n_steps: 50}]` does.
    logger = registry("callback").create(
        "tensorboard", log_dir=str(tmp_path / "tb"), histogram_every_n_steps=50
    )
    assert isinstance(logger, TensorBoardLogger)
    assert (logger.log_dir, logger.histogram_every_n_steps) == (tmp_path / "tb", 50)


def test_event_files_hold_the_trainers_metrics(tmp_path) -> None:
    log_dir = tmp_path / "tb"
    recorder = Recorder()
    logger = TensorBoardLogger(log_dir, histogram_every_n_steps=3)
    trainer = make_trainer(tmp_path, [logger, recorder])
    trainer.fit()
    assert logger.writer is None  # closed at fit end
    events = read_events(log_dir)

    # Training loss: every optimizer step, equal to what the Trainer logged.
    train_loss = scalars(events, "train_loss")
    assert sorted(train_loss) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    for step, value in train_loss.items():
        assert close(value, recorder.train[step]["train_loss"]), step
    # Validation metrics: once per epoch, at the step validation ran.
    val_loss = scalars(events, "val_loss")
    assert sorted(val_loss) == sorted(recorder.val) == [4, 8]
    for step, value in val_loss.items():
        assert close(value, recorder.val[step]["val_loss"])
    # Every metric the Trainer logged has its scalar (and only those, plus lr/weights).
    logged = {k for row in recorder.train.values() for k in row}
    logged |= {k for row in recorder.val.values() for k in row}
    tags = set(events.Tags()["scalars"])
    assert tags == logged | {"lr/group0", "lr/group1"}

    # Learning rate of each param group: the one used for the step (StepLR halves it).
    for group in (0, 1):
        lrs = scalars(events, f"lr/group{group}")
        assert sorted(lrs) == sorted(recorder.lrs)
        for step, value in lrs.items():
            assert close(value, recorder.lrs[step][group])
    assert close(scalars(events, "lr/group0")[1], 0.1)
    assert close(scalars(events, "lr/group1")[4], 0.025)

    # Weight histograms every 3 steps, of the weights after that step.
    assert set(events.Tags()["histograms"]) == {"weights/weight", "weights/bias"}
    for name in ("weight", "bias"):
        histograms = events.Histograms(f"weights/{name}")
        assert [h.step for h in histograms] == [3, 6]
        for h in histograms:
            w = recorder.weights[h.step][name].double()
            assert h.histogram_value.num == w.numel()
            assert close(h.histogram_value.min, w.min().item())
            assert close(h.histogram_value.max, w.max().item())
            assert math.isclose(h.histogram_value.sum, w.sum().item(), abs_tol=1e-5)


def test_profiler_trace_is_pointed_to(tmp_path) -> None:
    log_dir = tmp_path / "tb"
    profiler = Profiler(start_step=1, end_step=2, dirpath=tmp_path / "prof", summary=False)
    trainer = make_trainer(
        tmp_path, [profiler, TensorBoardLogger(log_dir, histogram_every_n_steps=None)]
    )
    trainer.fit()
    assert profiler.trace_path is not None and Path(profiler.trace_path).exists()
    events = read_events(log_dir)
    assert events.Tags()["histograms"] == []
    [event] = events.Tensors("profiler/trace/text_summary")
    text = tensor_util.make_ndarray(event.tensor_proto).item().decode()
    assert str(profiler.trace_path) in text
    assert event.step == 3  # logged right after the profiled window closed


def test_resume_appends_to_the_same_run_without_duplicates(tmp_path) -> None:
    log_dir, ckpt = tmp_path / "tb", tmp_path / "ckpt" / "step4"
    first = Recorder()
    crashing = make_trainer(
        tmp_path, [TensorBoardLogger(log_dir), first, CrashAt(ckpt, save_step=4, crash_step=6)]
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()
    # Flushed and closed on the exception: every step up to the crash is on disk.
    assert sorted(scalars(read_events(log_dir), "train_loss")) == [1, 2, 3, 4, 5, 6]

    second = Recorder()
    make_trainer(tmp_path, [TensorBoardLogger(log_dir), second]).fit(resume=ckpt)
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 2  # same directory
    train_loss = scalars(read_events(log_dir), "train_loss")
    # Steps 5 and 6 of the crashed run were purged; the resumed run's are kept.
    assert sorted(train_loss) == list(range(1, 9))
    for step in range(1, 5):
        assert close(train_loss[step], first.train[step]["train_loss"])
    for step in range(5, 9):
        assert close(train_loss[step], second.train[step]["train_loss"])
    assert sorted(scalars(read_events(log_dir), "val_loss")) == [4, 8]


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "50"])
def test_bad_histogram_every_n_steps_is_one_clear_error(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"histogram_every_n_steps must be a positive int"):
        registry("callback").create("tensorboard", histogram_every_n_steps=bad)


def test_bad_log_every_n_steps_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"log_every_n_steps must be a positive int, got 0"):
        TensorBoardLogger(log_every_n_steps=0)


def test_log_dir_under_a_file_is_one_clear_error(tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"log_dir .* is not a writable directory"):
        registry("callback").create("tensorboard", log_dir=str(blocker / "tb"))


def test_unwritable_log_dir_fails_before_training(tmp_path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    log_dir = read_only / "tb"
    if os.access(read_only, os.W_OK):  # root writes anywhere: /proc refuses new folders
        if not Path("/proc").is_dir():
            pytest.skip("no directory here refuses this user's writes")
        log_dir = Path("/proc/deepseek-tensorboard-test")
    recorder = Recorder()
    trainer = make_trainer(tmp_path, [TensorBoardLogger(log_dir), recorder])
    try:
        with pytest.raises(ValueError, match=r"log_dir .* is not a writable directory"):
            trainer.fit()
    finally:
        read_only.chmod(0o700)
    assert recorder.train == {}  # no step ran


JOB_MODULE = """
import torch


def model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def data(seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=generator)
    return torch.utils.data.TensorDataset(x, (x.sum(dim=1) > 0).long())
"""


def write_job(tmp_path: Path, callback: str) -> Path:
    (tmp_path / "tbjob.py").write_text(JOB_MODULE)
    config = tmp_path / "job.yaml"
    config.write_text(
        f"""seed: 0
output_dir: {tmp_path / "out"}
model: {{name: "tbjob:model"}}
data:
  train: {{name: "tbjob:data"}}
  val: {{name: "tbjob:data", seed: 1}}
  batch_size: 4
optimizer: {{name: SGD, lr: 0.1}}
trainer: {{max_epochs: 1, loss: cross_entropy}}
callbacks:
  - {callback}
"""
    )
    return config


def test_the_shipped_yaml_example_uses_it_by_name(tmp_path, monkeypatch, capsys) -> None:
    from deepseek.cli import main

    monkeypatch.chdir(tmp_path)  # the example's paths are relative to where it runs
    config = Path(__file__).parents[1] / "examples" / "tensorboard.yaml"
    assert main(["train", str(config)]) == 0, capsys.readouterr()
    events = read_events(tmp_path / "runs" / "tensorboard-example" / "tb")
    assert sorted(scalars(events, "train_loss")) == list(range(1, 9))
    assert sorted(scalars(events, "val_loss")) == [4, 8]
    lrs = scalars(events, "lr/group0")  # StepLR(step_size=4, gamma=0.5) on lr=0.1
    assert all(close(lrs[s], 0.1 if s <= 4 else 0.05) for s in range(1, 9))
    assert [h.step for h in events.Histograms("weights/weight")] == [4, 8]
    [text] = events.Tensors("profiler/trace/text_summary")
    assert "trace.json" in tensor_util.make_ndarray(text.tensor_proto).item().decode()


def test_yaml_job_with_a_bad_option_says_what_is_wrong(tmp_path, capsys) -> None:
    from deepseek.cli import main

    config = write_job(tmp_path, "{name: tensorboard, histogram_every_n_steps: 0}")
    assert main(["train", str(config)]) != 0
    err = capsys.readouterr().err
    assert "histogram_every_n_steps must be a positive int" in err
    assert "Traceback" not in err


def test_only_global_rank_zero_writes_under_ddp(tmp_path) -> None:
    if "ddp" not in registry("strategy").names():
        pytest.skip("the ddp strategy comes with deepseek-dist, not installed here")
    import json
    import socket

    import torch.multiprocessing as mp
    from _tensorboard_ddp_worker import rank

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["is_global_zero"] for r in ranks] == [True, False]
    # One writer (rank zero's): one event file, holding rank zero's metrics.
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    events = read_events(tmp_path / "tb")
    train_loss = scalars(events, "train_loss")
    expected = {int(k): v for k, v in ranks[0]["train_loss"].items()}
    assert sorted(train_loss) == sorted(expected) == [1, 2, 3, 4]
    assert all(close(train_loss[s], expected[s]) for s in expected)
    assert sorted(scalars(events, "val_loss")) == [4]
    assert [h.step for h in events.Histograms("weights/weight")] == [2, 4]
