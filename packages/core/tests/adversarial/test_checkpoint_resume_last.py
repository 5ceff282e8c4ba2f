"""``resume="last"`` resumes the newest checkpoint of the run that owns the folder, and
says which (issue 12, item 4); changed settings on resume are reported, lr and weight
decay apply, another optimizer class is a clear error (item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepseek.callbacks import ModelCheckpoint
from deepseek.checkpoint import describe_checkpoint, load_checkpoint, resolve_checkpoint_path

from .conftest import tiny_trainer


def test_stale_longer_run_is_not_picked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny_trainer(tmp_path, [ModelCheckpoint()], max_epochs=4).fit()
    fresh = tiny_trainer(tmp_path, [ModelCheckpoint()], max_epochs=2)
    fresh.fit()
    fresh_run = (
        fresh.callbacks[0].run_id if isinstance(fresh.callbacks[0], ModelCheckpoint) else None
    )
    [cb] = [c for c in fresh.callbacks if isinstance(c, ModelCheckpoint)]
    fresh_run = cb.run_id

    picked = resolve_checkpoint_path(tmp_path / "checkpoints", "last")
    assert picked.name == "epoch_2-step_8"
    assert load_checkpoint(picked).metadata["run"]["id"] == fresh_run

    resumed = tiny_trainer(tmp_path, [ModelCheckpoint()], max_epochs=3)
    capsys.readouterr()
    resumed.fit(resume="last")
    assert resumed.global_step == 12  # 2 epochs resumed + 1, not 4 + nothing
    said = capsys.readouterr()
    assert "epoch_2-step_8" in said.out + said.err
    assert fresh_run in describe_checkpoint(picked)
    [rcb] = [c for c in resumed.callbacks if isinstance(c, ModelCheckpoint)]
    assert rcb.run_id == fresh_run  # a resumed run keeps its id


def test_last_skips_weights_only_for_resume(tmp_path: Path) -> None:
    tiny_trainer(tmp_path, [ModelCheckpoint(save_freq=2)], max_epochs=1).fit()
    tiny_trainer(
        tmp_path,
        [ModelCheckpoint(tmp_path / "checkpoints" / "w{step}", save_weights_only=True)],
        max_epochs=1,
    ).fit()
    assert resolve_checkpoint_path(tmp_path / "checkpoints", "last").name == "w4"
    full = resolve_checkpoint_path(tmp_path / "checkpoints", "last", require_full=True)
    assert full.name == "epoch_0-step_4"


def test_best_and_explicit_paths(tmp_path: Path) -> None:
    cb = ModelCheckpoint(monitor="val_loss", save_top_k=-1)
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=3)
    trainer.fit()
    assert resolve_checkpoint_path(trainer, "best") == Path(cb.best_model_path)
    # From the folder alone (a new process): the owning run's best recorded score.
    scores = {
        p.name: load_checkpoint(p).metadata["run"]["score"]
        for p in (tmp_path / "checkpoints").iterdir()
    }
    best = resolve_checkpoint_path(tmp_path / "checkpoints", "best")
    assert scores[best.name] == min(scores.values())
    assert resolve_checkpoint_path(tmp_path, best) == best
    with pytest.raises(FileNotFoundError, match="found no checkpoint under"):
        resolve_checkpoint_path(tmp_path / "empty", "last")
    tiny_trainer(tmp_path / "nomon", [ModelCheckpoint()], max_epochs=1).fit()
    with pytest.raises(FileNotFoundError, match="records a monitored score"):
        resolve_checkpoint_path(tmp_path / "nomon" / "checkpoints", "best")


def test_new_lr_and_weight_decay_apply_and_are_reported(tmp_path: Path) -> None:
    first = tiny_trainer(
        tmp_path,
        [ModelCheckpoint()],
        max_epochs=1,
        optimizer=torch.optim.AdamW,
        optimizer_kwargs={"lr": 0.01, "weight_decay": 0.0, "eps": 1e-8},
    )
    first.fit()
    again = tiny_trainer(
        tmp_path,
        [ModelCheckpoint()],
        max_epochs=2,
        optimizer=torch.optim.AdamW,
        optimizer_kwargs={"lr": 0.002, "weight_decay": 0.1, "eps": 1e-6},
        batch_size=4,
    )
    with pytest.warns(UserWarning, match="differ from the checkpoint") as record:
        again.fit(resume="last")
    message = str(next(w.message for w in record if "differ" in str(w.message)))
    assert "lr: 0.01 -> 0.002 (applied)" in message
    assert "weight_decay: 0.0 -> 0.1 (applied)" in message
    assert "eps: the checkpoint's 1e-08 kept" in message
    assert "batch_size: 8 -> 4" in message
    group = again.optimizer.param_groups[0]
    assert group["lr"] == 0.002 and group["weight_decay"] == 0.1 and group["eps"] == 1e-8


def test_lr_change_under_a_scheduler_rescales_its_base(tmp_path: Path) -> None:
    kwargs = {
        "optimizer_kwargs": {"lr": 0.1},
        "scheduler": torch.optim.lr_scheduler.StepLR,
        "scheduler_kwargs": {"step_size": 2, "gamma": 0.5},
    }
    tiny_trainer(tmp_path, [ModelCheckpoint()], max_epochs=1, **kwargs).fit()
    kwargs["optimizer_kwargs"] = {"lr": 0.2}
    again = tiny_trainer(tmp_path, [ModelCheckpoint()], max_epochs=1, **kwargs)
    with pytest.warns(UserWarning, match=r"lr: 0.1 -> 0.2 \(applied\)"):
        again.fit(resume="last")  # already finished: restores, reports, trains no step
    group = again.optimizer.param_groups[0]
    # 4 steps of StepLR(2, 0.5) from 0.1 is 0.025; the same schedule from 0.2 is 0.05.
    assert group["initial_lr"] == 0.2 and again.scheduler.base_lrs == [0.2]
    assert group["lr"] == pytest.approx(0.05)


def test_another_optimizer_class_is_a_clear_error(tmp_path: Path) -> None:
    tiny_trainer(
        tmp_path,
        [ModelCheckpoint()],
        max_epochs=1,
        optimizer=torch.optim.AdamW,
        optimizer_kwargs={"lr": 0.01},
    ).fit()
    sgd = tiny_trainer(tmp_path, [ModelCheckpoint()], max_epochs=2)
    with pytest.raises(
        ValueError,
        match=r"saved with optimizer torch.optim.adamw.AdamW.*"
        r"SGD.*load_weights",
    ):
        sgd.fit(resume="last")


def test_weights_only_restore_starts_a_fresh_run_from_the_weights(tmp_path: Path) -> None:
    from deepseek.checkpoint import load_weights
    from deepseek.training import checkpointing

    first = tiny_trainer(
        tmp_path,
        [ModelCheckpoint()],
        max_epochs=1,
        optimizer=torch.optim.AdamW,
        optimizer_kwargs={"lr": 0.01},
    )
    first.fit()
    sgd = tiny_trainer(tmp_path / "b", [], max_epochs=1)
    path = checkpointing.restore(
        sgd, tmp_path / "checkpoints" / "epoch_1-step_4", weights_only=True
    )
    assert path is not None and sgd.global_step == 0
    reference = tiny_trainer(tmp_path / "c", [], max_epochs=1).model
    load_weights(reference, path)
    for a, b in zip(sgd.model.parameters(), reference.parameters()):
        assert torch.equal(a, b)
    sgd.fit()
    assert sgd.global_step == 4
