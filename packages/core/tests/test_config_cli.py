"""YAML configs, ``--set`` overrides and ``deepseek train`` end to end."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from deepseek.config import ConfigError, load_config, parse_config

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    def model(hidden=8):
        return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def data(n=48, seed=0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=g)
        return TensorDataset(x, (x.sum(1) > 0).long())
    """
)

CONFIG = textwrap.dedent(
    """
    seed: 0
    output_dir: {out}
    model: {{name: "tinyjob:model", hidden: 16}}
    data:
      train: {{name: "tinyjob:data"}}
      val: {{name: "tinyjob:data", seed: 1}}
      batch_size: 8
    optimizer: {{name: AdamW, lr: 1e-2}}
    scheduler: {{name: StepLR, interval: epoch, step_size: 1}}
    trainer: {{max_epochs: 3, loss: cross_entropy, metrics: [accuracy], precision: fp32}}
    callbacks:
      - {{name: model_checkpoint, monitor: val_accuracy, save_last: true}}
    """
)

MINIMAL = {"model": {"name": "m:f"}, "data": {"train": "d:f"}}


@pytest.fixture
def job(tmp_path):
    (tmp_path / "tinyjob.py").write_text(MODULE)
    config = tmp_path / "job.yaml"
    config.write_text(CONFIG.format(out=tmp_path / "out"))
    return config


def deepseek(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "deepseek.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_typed_values_and_overrides(job):
    cfg = load_config(job, ["trainer.max_epochs=5", "optimizer.lr=0.5", "trainer.resume=last"])
    assert cfg.trainer.max_epochs == 5
    assert cfg.optimizer.kwargs == {"lr": 0.5}
    assert cfg.scheduler.interval == "epoch" and cfg.scheduler.kwargs == {"step_size": 1}
    assert cfg.callbacks[0].name == "model_checkpoint"
    assert cfg.trainer.resume == "last"


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"trainer": {"max_epoch": 3}},
            r"trainer.max_epoch: unknown key. Did you mean 'max_epochs'",
        ),
        (
            {"trainer": {"max_epochs": "three"}},
            r"trainer.max_epochs: 'three' \(str\) is not allowed",
        ),
        ({"trainer": {"metrics": "accuracy"}}, r"trainer.metrics: expected a list"),
        ({"data": {"train": {"split": "x"}}}, r"data.train: expected a name or a mapping"),
        ({"scheduler": {"name": "StepLR", "interval": "batch"}}, r"scheduler.interval: 'batch'"),
        ({"modle": {}}, r"modle: unknown key. Did you mean 'model'"),
    ],
)
def test_errors_name_the_key_path(change, match):
    data = {**MINIMAL, **change}
    if "data" in change:
        data["data"] = change["data"]
    with pytest.raises(ConfigError, match=match):
        parse_config(data)


def test_missing_required_key_and_file(tmp_path):
    with pytest.raises(ConfigError, match="model: required key is missing"):
        parse_config({"data": {"train": "d:f"}})
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_config(MINIMAL, ["trainer.max_epochs"])


def test_print_config(job, capsys):
    from deepseek.cli import main

    assert main(["train", str(job), "--print-config", "--set", "trainer.max_epochs=7"]) == 0
    out = capsys.readouterr().out
    assert "max_epochs: 7" in out and "tinyjob:model" in out


def test_train_checkpoints_plots_and_resumes(job, tmp_path):
    result = deepseek("train", str(job), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert (out / "curves.png").stat().st_size > 1000
    assert (out / "checkpoints" / "last" / "model.safetensors").exists()
    assert "val_accuracy" in result.stdout and "| steps" in result.stdout
    assert "val_accuracy" in (out / "metrics.csv").read_text().splitlines()[0]
    # Resume the finished run with more epochs: it continues at step 18.
    more = deepseek(
        "train", str(job), "--set", "trainer.resume=last", "--set", "trainer.max_epochs=4"
    )
    assert more.returncode == 0, more.stderr
    assert "| steps" in more.stdout and "| 24" in more.stdout


def test_train_errors_are_one_clear_line(job, tmp_path, capsys):
    from deepseek.cli import main

    assert main(["train", str(job), "--set", "trainer.precision=fp8"]) == 2
    err = capsys.readouterr().err
    assert "unknown precision 'fp8'" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["train", str(job), "--set", "model.hiden=3"]) == 2
    assert "model.hiden: not accepted" in capsys.readouterr().err


def test_validate_and_predict_a_checkpoint(job, tmp_path, capsys):
    """`deepseek validate/predict config --ckpt best|last|PATH` score the checkpoint's
    weights (not fresh ones) on the config's validation data."""
    import json

    import torch

    from deepseek.cli import main

    assert main(["train", str(job), "--set", "trainer.enable_progress_bar=false"]) == 0
    capsys.readouterr()
    root = tmp_path / "out" / "checkpoints"
    recorded = {
        p.name: json.loads((p / "meta.json").read_text())["metadata"]["metrics"]
        for p in root.iterdir()
        if p.is_dir() and p.name != "last"
    }
    top = max(m["val_accuracy"] for m in recorded.values())
    tied = [name for name, m in recorded.items() if m["val_accuracy"] == top]
    assert main(["validate", str(job), "--ckpt", "best"]) == 0
    out = capsys.readouterr().out
    assert any(f"weights from {root / name}\n" in out for name in tied), out
    assert f"| val_accuracy | {round(top, 4)}" in out  # the checkpoint's weights, re-scored
    assert main(["predict", str(job), "--ckpt", "last"]) == 0
    predictions = torch.load(tmp_path / "out" / "predictions.pt", weights_only=True)
    assert predictions.shape == (48, 2)
    code = main(["validate", str(job), "--ckpt", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err and "Traceback" not in err
