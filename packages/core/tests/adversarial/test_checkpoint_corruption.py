"""Corrupted and unwritable checkpoints (issue 12, items 5 and 10).

A flipped bit anywhere in a checkpoint file is an error naming that file (SHA-256 per
file, recorded while writing); ``verify=False`` skips the check (and the test shows the
corruption then loads silently, so the check is what catches it). A trainer state that
would run code is refused even when the attacker also rewrote the checksums. A full disk
names the checkpoint that could not be written and leaves the previous one intact.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from deepseek.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from deepseek.checkpoint.format import file_checksum

from .conftest import Payload, flip_byte


def _save(path: Path) -> Path:
    torch.manual_seed(0)
    model = nn.Linear(64, 64)
    state = {"step": 3, "rng": torch.get_rng_state(), "moments": torch.randn(256)}
    return save_checkpoint(path, model.state_dict(), state, {"global_step": 3})


@pytest.mark.parametrize("name", ["model.safetensors", "trainer_state.pt"])
def test_bit_flip_in_data_is_detected_and_names_the_file(tmp_path: Path, name: str) -> None:
    path = _save(tmp_path / "ckpt")
    clean = load_checkpoint(path)
    before = [t.clone() for t in [*clean.model_state.values(), clean.trainer_state["moments"]]]
    # Flip a bit inside tensor data (not a header, which the format's own checks notice).
    data = (path / name).read_bytes()
    tensor = clean.model_state["weight"] if name == "model.safetensors" else before[-1]
    flip_byte(path / name, data.index(tensor.numpy().tobytes()) + 100)

    with pytest.raises(CheckpointError, match=rf"{name} is corrupted.*checksum.*verify=False"):
        load_checkpoint(path)
    if name == "model.safetensors":
        with pytest.raises(CheckpointError, match=rf"{name} is corrupted"):
            load_weights(nn.Linear(64, 64), path)

    # The flip is silent without the checksum: same sizes, different values.
    damaged = load_checkpoint(path, verify=False)
    after = [*damaged.model_state.values(), damaged.trainer_state["moments"]]
    assert sum(not torch.equal(a, b) for a, b in zip(before, after)) == 1


def test_checksums_are_recorded_for_every_file(tmp_path: Path) -> None:
    path = _save(tmp_path / "ckpt")
    meta = json.loads((path / "meta.json").read_text())
    assert set(meta["checksums"]) == set(meta["files"]) == {"model.safetensors", "trainer_state.pt"}
    for name, digest in meta["checksums"].items():
        assert digest == file_checksum(path / name)


def test_malicious_trainer_state_with_rewritten_checksums_runs_nothing(
    tmp_path: Path, marker: Path
) -> None:
    path = _save(tmp_path / "ckpt")
    buffer = io.BytesIO()
    torch.save({"step": 3, "evil": Payload(marker)}, buffer)
    (path / "trainer_state.pt").write_bytes(buffer.getvalue())
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["trainer_state.pt"] = len(buffer.getvalue())
    meta["checksums"]["trainer_state.pt"] = file_checksum(path / "trainer_state.pt")
    (path / "meta.json").write_text(json.dumps(meta))

    with pytest.raises(CheckpointError, match="execute code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_full_disk_names_the_checkpoint_and_keeps_the_previous(tiny_disk: Path) -> None:
    small = save_checkpoint(tiny_disk / "last", {"w": torch.ones(4)}, {"step": 1})
    for model_state, trainer_state in (
        ({"w": torch.ones(400_000)}, {"step": 2}),  # the weights file fills the disk
        ({"w": torch.ones(4)}, {"step": 2, "big": torch.ones(400_000)}),  # the state does
    ):
        with pytest.raises(OSError, match=rf"cannot write checkpoint {small}: no space left"):
            save_checkpoint(small, model_state, trainer_state)
        assert load_checkpoint(small).trainer_state == {"step": 1}
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["last"]  # no staging left
