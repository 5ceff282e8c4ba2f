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
