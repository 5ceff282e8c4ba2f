"""Shared pieces of the adversarial suite: attacks on files that should be data.

Each test here reproduces an attempt to make DeepSeek run code from a data file, delete
data it did not write, or accept a corrupted file silently. ``Payload`` is the attacker's
object: unpickling it creates ``marker``, so a test proves that no code ran by asserting
that the marker never appears.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: proof that a file ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.marker,)


def pickled_payload(marker: Path) -> bytes:
    """A torch.save blob whose loading (weights_only=False) creates ``marker``."""
    buffer = io.BytesIO()
    torch.save({"state": Payload(marker)}, buffer)
    return buffer.getvalue()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "ATTACK_RAN"


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 1 MiB file system (tmpfs), for full-disk errors; skipped where mounting
    is not allowed (not root, or no CAP_SYS_ADMIN)."""
    import shutil
    import subprocess

    mount = tmp_path / "tiny_disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def flip_byte(file: Path, offset: int) -> None:
    """Flip one bit of ``file`` at ``offset`` (negative: from the end), keeping its size."""
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x01
    file.write_bytes(bytes(data))


def tiny_trainer(root: Path, callbacks: list, max_epochs: int = 2, **kwargs):
    """A 4-steps-per-epoch Trainer on a fixed toy problem writing under ``root``."""
    from torch import nn
    from torch.utils.data import TensorDataset

    from deepseek.training import Trainer

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g))
    torch.manual_seed(0)
    model = kwargs.pop("model", None) or nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    options = {
        "optimizer": torch.optim.SGD,
        "optimizer_kwargs": {"lr": 0.1},
        "train_data": data,
        "val_data": data,
        "batch_size": 8,
        "loss_fn": nn.functional.cross_entropy,
        "enable_progress_bar": False,
        "default_root_dir": root,
        "seed": 0,
        "max_epochs": max_epochs,
        **kwargs,
    }
    optimizer, optimizer_kwargs = options.pop("optimizer"), options.pop("optimizer_kwargs")
    return Trainer(model, optimizer, optimizer_kwargs, callbacks=callbacks, **options)
