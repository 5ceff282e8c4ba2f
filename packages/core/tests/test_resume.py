"""Checkpoints written by the Trainer, and exact resume after a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepseek.callbacks import CSVLogger, ModelCheckpoint
from deepseek.checkpoint import load_weights
from deepseek.training import Trainer

# A run with everything exact resume must restore: dropout (global RNG), shuffling
# (sampler position), AdamW moments, a per-step scheduler and callback state.
WORKER = textwrap.dedent(
    """
    import sys, time, torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from deepseek.callbacks import Callback, CSVLogger, ModelCheckpoint
    from deepseek.training import Trainer
    from safetensors.torch import save_file

    out, resume, slow = sys.argv[1], sys.argv[2], sys.argv[3] == "slow"

    class Announce(Callback):
        def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
            print(f"STEP {trainer.global_step}", flush=True)
            if slow:
                time.sleep(0.05)

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(96, 8, generator=g), torch.randint(0, 3, (96,), generator=g))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
    trainer = Trainer(
        model, torch.optim.AdamW, {"lr": 0.01}, train_data=data, val_data=data,
        batch_size=8, loss_fn=nn.functional.cross_entropy, max_epochs=3, seed=0,
        precision="fp32", scheduler=torch.optim.lr_scheduler.StepLR,
        scheduler_kwargs={"step_size": 5, "gamma": 0.9}, enable_progress_bar=False,
        default_root_dir=out,
        callbacks=[Announce(), ModelCheckpoint(out + "/ckpt/step_{step}", save_freq=1,
                                               save_top_k=2, save_last=True),
                   CSVLogger(out, log_every_n_steps=1)],
    )
    trainer.fit(resume=None if resume == "none" else resume)
    save_file(dict(model.state_dict()), out + "/final.safetensors")
    print("DONE", trainer.global_step, flush=True)
    """
)


def _final_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture
def worker(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return script


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path, worker):
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, str(worker), str(reference), "none", "fast"], check=True, timeout=300
    )

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(worker), str(run), "none", "slow"],
        stdout=subprocess.PIPE,
        text=True,
    )
    killed_at = None
    for line in proc.stdout:
        # 12 batches per epoch: step 17 is in the middle of the second epoch.
        if line.startswith("STEP") and int(line.split()[1]) >= 17:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = int(line.split()[1])
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the worker must die from the signal"
    assert killed_at is not None and not (run / "final.safetensors").exists()

    resumed = subprocess.run(
        [sys.executable, str(worker), str(run), "last", "fast"],
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
    )
    first_step = int(
        next(ln for ln in resumed.stdout.splitlines() if ln.startswith("STEP")).split()[1]
    )
    assert killed_at < first_step + 3, "resume must continue from the last checkpoint"
    assert "DONE 36" in resumed.stdout

    expected = _final_weights(reference / "final.safetensors")
    actual = _final_weights(run / "final.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    # The log too: every row up to the checkpoint was on disk when the process died, and
    # the resumed run wrote the rest (no row lost, none twice).
    assert (run / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()


def make_run(tmp_path, **kwargs):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    trainer = Trainer(
        model,
        torch.optim.SGD,
        {"lr": 0.1},
        train_data=data,
        val_data=data,
        batch_size=8,
        loss_fn=nn.functional.cross_entropy,
        metrics=["accuracy"],
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        seed=0,
        **kwargs,
    )
    return model, trainer


def test_model_checkpoint_snippet_weights_only_loads_into_fresh_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cb = ModelCheckpoint(
        filepath="./checkpoints/epoch_{epoch}",
        save_weights_only=True,
        save_freq="epoch",
        monitor="val_loss",
    )
    model, trainer = make_run(tmp_path, max_epochs=2, callbacks=[cb])
    trainer.fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_1", "epoch_2"]
    fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    load_weights(fresh, tmp_path / "checkpoints" / "epoch_2")
    x = torch.randn(5, 4)
    assert torch.equal(fresh(x), model(x))
    # A weights-only checkpoint cannot resume training: a clear error says why.
    _, again = make_run(tmp_path, max_epochs=3)
    with pytest.raises(ValueError, match="weights-only checkpoint"):
        again.fit(resume=tmp_path / "checkpoints" / "epoch_2")


def test_save_top_k_by_metric_and_templates(tmp_path):
    cb = ModelCheckpoint(
        filepath=tmp_path / "ck" / "{epoch}-{val_loss:.4f}",
        monitor="val_loss",
        save_top_k=2,
        save_last=True,
    )
    _, trainer = make_run(tmp_path, max_epochs=4, callbacks=[cb])
    trainer.fit()
    kept = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert len(kept) == 3 and "last" in kept
    scores = sorted(float(name.split("-")[1]) for name in kept if name != "last")
    assert cb.best_model_path.endswith(f"{scores[0]:.4f}")
    with pytest.raises(KeyError, match="uses 'val_f1', which is not logged"):
        _, t = make_run(tmp_path, max_epochs=1, callbacks=[ModelCheckpoint(tmp_path / "{val_f1}")])
        t.fit()


def test_resume_from_epoch_end_and_csv_log(tmp_path):
    _, full = make_run(tmp_path / "a", max_epochs=4)
    full.fit()
    logger = CSVLogger(log_every_n_steps=1)
    model, first = make_run(
        tmp_path / "b", max_epochs=2, callbacks=[ModelCheckpoint(save_freq="epoch"), logger]
    )
    first.fit()
    model2, second = make_run(
        tmp_path / "b", max_epochs=4, callbacks=[ModelCheckpoint(save_freq="epoch"), CSVLogger()]
    )
    second.fit(resume="last")
    assert second.global_step == full.global_step == 16
    for a, b in zip(full.model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step")
    steps = [int(r.split(",")[1]) for r in rows[1:]]
    assert steps == sorted(steps) and max(steps) == 16


def test_resume_last_without_checkpoint_warns_and_starts_fresh(tmp_path):
    _, trainer = make_run(tmp_path, max_epochs=1)
    with pytest.warns(UserWarning, match="found no full checkpoint"):
        trainer.fit(resume="last")
    assert trainer.global_step == 4


def test_resume_from_garbage_is_a_clear_error(tmp_path):
    (tmp_path / "not_a_ckpt").mkdir()
    (tmp_path / "not_a_ckpt" / "config.json").write_text("{}")
    _, trainer = make_run(tmp_path, max_epochs=1)
    with pytest.raises(ValueError, match="not a DeepSeek checkpoint"):
        trainer.fit(resume=tmp_path / "not_a_ckpt")
    with pytest.raises(FileNotFoundError):
        trainer.fit(resume=tmp_path / "missing")
