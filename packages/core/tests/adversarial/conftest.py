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
