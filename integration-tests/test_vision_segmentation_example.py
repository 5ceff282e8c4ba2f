"""examples/segmentation_3d.yaml runs end to end through ``deepseek train`` (shrunk with
--set to a few seconds of work): phantoms to HDF5, balanced patches with elastic
augmentation, U-Net++ with activation checkpointing, sliding-window validation Dice,
overlay PNGs and curves."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepseek.vision")

ROOT = Path(__file__).resolve().parents[1]


def test_segmentation_example_trains_validates_and_writes_overlays(tmp_path):
    out, data = tmp_path / "run", tmp_path / "data"
    overrides = {
        "output_dir": out,
        "data.train.data_dir": data,
        "data.val.data_dir": data,
        "data.train.n_volumes": 2,
        "data.train.size": 32,
        "data.train.samples_per_volume": 2,
        "data.train.patch_size": "[16, 16, 16]",
        "data.train.elastic_prob": 1.0,
        "data.val.n_volumes": 1,
        "data.val.size": 32,
        "model.features": "[4, 8]",
        "model.roi_size": "[16, 16, 16]",
        "trainer.max_epochs": 1,
        "trainer.enable_progress_bar": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "deepseek.cli",
        "train",
        str(ROOT / "examples/segmentation_3d.yaml"),
    ]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "activation checkpointing wraps" in done.stdout + done.stderr
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    dice = [float(r["val_dice"]) for r in rows if r.get("val_dice")]
    assert dice and 0.0 <= dice[-1] <= 1.0
    assert (out / "overlays" / "epoch_000.png").stat().st_size > 0
    assert (out / "curves.png").exists()
    assert sorted(p.name for p in data.iterdir()) == ["train_2x32.h5", "val_1x32.h5"]
