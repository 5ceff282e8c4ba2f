"""Pruning deletes only what this run wrote in its own folder (issue 12, item 2), and
``save_top_k`` holds across resumes (item 6).

Attacks: a crafted trainer state listing directories outside the folder (absolute
paths, ``..``, a symlink swapped in for a checkpoint, another run's checkpoint); and the
careless user who copies run A's output folder to B and resumes B.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from deepseek.callbacks import ModelCheckpoint
from deepseek.checkpoint import load_checkpoint, save_checkpoint
from deepseek.checkpoint.format import META_FILE

from .conftest import tiny_trainer


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _plant_callback_state(checkpoint: Path, state: dict) -> None:
    """Rewrite ModelCheckpoint's saved state inside a checkpoint (and its checksum)."""
    from deepseek.checkpoint.format import file_checksum

    ckpt = load_checkpoint(checkpoint)
    trainer_state = dict(ckpt.trainer_state)
    trainer_state["callbacks"] = {**trainer_state["callbacks"], "ModelCheckpoint": state}
    torch.save(trainer_state, checkpoint / "trainer_state.pt")
    meta = json.loads((checkpoint / META_FILE).read_text())
    meta["files"]["trainer_state.pt"] = (checkpoint / "trainer_state.pt").stat().st_size
    meta["checksums"]["trainer_state.pt"] = file_checksum(checkpoint / "trainer_state.pt")
    (checkpoint / META_FILE).write_text(json.dumps(meta))


def test_crafted_state_cannot_delete_outside_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    tiny_trainer(run, [ModelCheckpoint(run / "ck" / "epoch_{epoch}")], max_epochs=1).fit()
    victims = {
        "absolute": tmp_path / "precious",
        "dotdot": run / "precious_sibling",
        "symlink_target": tmp_path / "linked_data",
    }
    for victim in victims.values():
        victim.mkdir()
        (victim / "data.txt").write_text("keep me")
    # A checkpoint written by another run, in this folder.
    other_run = save_checkpoint(
        run / "ck" / "not_ours", {"w": torch.ones(1)}, {}, {"run": {"id": "someone-else"}}
    )
    # A symlink in the folder pointing outside it.
    (run / "ck" / "link").symlink_to(victims["symlink_target"], target_is_directory=True)
    state = {
        "saved": [
            [str(victims["absolute"]), 0.0],
            ["../precious_sibling", 0.0],
            ["not_ours", 0.0],
            ["link", 0.0],
            ["epoch_1", 0.0],
        ],
        "run_id": load_checkpoint(run / "ck" / "epoch_1").metadata["run"]["id"],
        "seq": 1,
    }
    _plant_callback_state(run / "ck" / "epoch_1", state)

    cb = ModelCheckpoint(run / "ck" / "epoch_{epoch}", save_top_k=1)
    with pytest.warns(UserWarning, match="not deleting .*not_ours.*written by run 'someone-else'"):
        tiny_trainer(run, [cb], max_epochs=3).fit(resume=run / "ck" / "epoch_1")

    for victim in victims.values():
        assert (victim / "data.txt").read_text() == "keep me"
    assert (other_run / META_FILE).exists()  # another run's checkpoint survives
    assert (run / "ck" / "link").is_symlink()
    assert _names(run / "ck") == ["epoch_3", "link", "not_ours"]


def test_copying_a_run_and_resuming_the_copy_leaves_the_source_intact(tmp_path: Path) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    tiny_trainer(a, [ModelCheckpoint(save_top_k=2)], max_epochs=2).fit()
    source = {p.name: (p / META_FILE).read_bytes() for p in (a / "checkpoints").iterdir()}
    assert len(source) == 2
    shutil.copytree(a, b)

    resumed = tiny_trainer(b, [ModelCheckpoint(save_top_k=2)], max_epochs=4)
    resumed.fit(resume="last")

    assert {p.name: (p / META_FILE).read_bytes() for p in (a / "checkpoints").iterdir()} == source
    assert _names(b / "checkpoints") == ["epoch_3-step_12", "epoch_4-step_16"]


def test_moved_run_prunes_its_own_copies(tmp_path: Path) -> None:
    a = tmp_path / "A"
    tiny_trainer(a, [ModelCheckpoint(save_top_k=1)], max_epochs=1).fit()
    moved = tmp_path / "moved"
    os.rename(a, moved)
    tiny_trainer(moved, [ModelCheckpoint(save_top_k=1)], max_epochs=2).fit(resume="last")
    assert _names(moved / "checkpoints") == ["epoch_2-step_8"]


@pytest.mark.parametrize("top_k", [1, 2])
def test_save_top_k_holds_across_repeated_resumes(tmp_path: Path, top_k: int) -> None:
    for epochs in (1, 2, 3, 5):
        cb = ModelCheckpoint(save_top_k=top_k)
        tiny_trainer(tmp_path, [cb], max_epochs=epochs).fit(resume="last")
        kept = _names(tmp_path / "checkpoints")
        assert len(kept) == min(top_k, epochs), kept
        assert kept[-1] == f"epoch_{epochs}-step_{4 * epochs}"
        assert cb.last_model_path == str(tmp_path / "checkpoints" / kept[-1])
        assert Path(cb.best_model_path).exists()


def test_last_model_path_never_names_a_pruned_checkpoint(tmp_path: Path) -> None:
    # A rising monitored loss: the newest checkpoint is pruned at once with top_k=1.
    cb = ModelCheckpoint(monitor="val_loss", mode="max", save_top_k=1)
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=3)
    trainer.fit()
    assert Path(cb.last_model_path).is_dir() and Path(cb.best_model_path).is_dir()
    assert cb.last_model_path == cb.best_model_path
    with_last = ModelCheckpoint(
        tmp_path / "b" / "e{epoch}", monitor="val_loss", save_top_k=1, save_last=True
    )
    tiny_trainer(tmp_path, [with_last], max_epochs=2).fit()
    assert with_last.last_model_path == str(tmp_path / "b" / "last")
