"""ModelCheckpoint bookkeeping and rebuilding models from checkpoints (issue 14, item 4):
a monitor that is never logged, ``monitor=None``, best/last paths, hyper-parameters
recorded with every checkpoint, ``load_model`` and ``from_checkpoint``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepseek.callbacks import ModelCheckpoint
from deepseek.checkpoint import (
    CheckpointError,
    CheckpointMixin,
    capture_hparams,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from deepseek.training import Trainer


class Net(CheckpointMixin, nn.Module):
    def __init__(self, width: int = 8, depth: int = 1) -> None:
        super().__init__()
        self.hparams = {"width": width, "depth": depth}
        layers: list[nn.Module] = [nn.Linear(4, width), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Linear(width, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@dataclasses.dataclass
class NetConfig:
    width: int = 6


class ConfigNet(nn.Module):
    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        self.fc = nn.Linear(4, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _trainer(root: Path, model: nn.Module, callbacks: list, max_epochs: int = 2) -> Trainer:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g))
    return Trainer(
        model,
        torch.optim.SGD,
        {"lr": 0.1},
        train_data=data,
        val_data=data,
        batch_size=8,
        loss_fn=nn.functional.cross_entropy,
        metrics=["accuracy"],
        max_epochs=max_epochs,
        enable_progress_bar=False,
        default_root_dir=root,
        seed=0,
        callbacks=callbacks,
    )


def test_unlogged_monitor_fails_at_the_first_validation_with_did_you_mean(tmp_path):
    torch.manual_seed(0)
    trainer = _trainer(tmp_path, Net(), [ModelCheckpoint(monitor="val_acc")])
    with pytest.raises(
        ValueError,
        match=r"monitor='val_acc'.*logged: .*val_accuracy.*"
        r"Did you mean 'val_accuracy'",
    ):
        trainer.fit()
    assert trainer.global_step == 4  # the first epoch's validation, not the end of the run


def test_monitor_none_keeps_the_newest(tmp_path):
    torch.manual_seed(0)
    cb = ModelCheckpoint(save_top_k=1)
    _trainer(tmp_path, Net(), [cb], max_epochs=3).fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_3-step_12"]
    assert (
        cb.best_model_path
        == cb.last_model_path
        == str(tmp_path / "checkpoints" / "epoch_3-step_12")
    )


def test_trainer_records_hparams_and_load_model_rebuilds(tmp_path):
    torch.manual_seed(0)
    model = Net(width=5, depth=2)
    cb = ModelCheckpoint(monitor="val_loss", save_top_k=1)
    _trainer(tmp_path, model, [cb]).fit()
    meta = load_checkpoint(cb.best_model_path).metadata
    assert meta["model"] == {
        "class": f"{Net.__module__}:Net",
        "source": "hparams",
        "hparams": {"width": 5, "depth": 2},
    }
    rebuilt = load_model(cb.best_model_path)  # the class's module is imported: found
    also = Net.from_checkpoint(cb.best_model_path)
    x = torch.randn(3, 4)
    reference = Net(5, 2)
    reference.load_state_dict(load_checkpoint(cb.best_model_path).model_state)
    for m in (rebuilt, also):
        assert isinstance(m, Net) and not m.training
        assert torch.equal(m(x), reference.eval()(x))


def test_dataclass_config_models_rebuild(tmp_path):
    model = ConfigNet(NetConfig(width=3))
    path = save_checkpoint(
        tmp_path / "c", model.state_dict(), metadata={"model": capture_hparams(model)}
    )
    rebuilt = load_model(path)
    assert isinstance(rebuilt, ConfigNet) and rebuilt.config == NetConfig(width=3)
    assert torch.equal(rebuilt.fc.weight, model.fc.weight)


def test_load_model_refuses_to_import_what_a_file_names(tmp_path):
    path = save_checkpoint(
        tmp_path / "c",
        {"w": torch.ones(1)},
        metadata={"model": {"class": "antigravity:Fly", "source": "hparams", "hparams": {}}},
    )
    with pytest.raises(CheckpointError, match="does not import modules a file names"):
        load_model(path)
    assert "antigravity" not in __import__("sys").modules
    plain = save_checkpoint(tmp_path / "p", nn.Linear(2, 2).state_dict())
    with pytest.raises(CheckpointError, match="records no hyper-parameters.*load_weights"):
        load_model(plain)


def test_unserialisable_hparams_are_not_recorded():
    model = Net()
    model.hparams = {"act": nn.ReLU()}  # not JSON: never pickled into a checkpoint
    assert capture_hparams(model) is None
    assert capture_hparams(nn.Linear(2, 2)) is None


def _sharded(tmp_path: Path) -> Path:
    """A sharded checkpoint the way deepseek-dist writes one: its own files, then
    write_meta, then the atomic commit."""
    from deepseek.checkpoint.atomic import commit_dir
    from deepseek.checkpoint.io import write_meta

    staging = tmp_path / ".s.tmp"
    (staging / "sharded").mkdir(parents=True)
    (staging / "sharded" / ".metadata").write_bytes(b"metadata")
    (staging / "sharded" / "__0_0.distcp").write_bytes(bytes(range(256)))
    torch.save({"step": 5}, staging / "trainer_state.pt")
    write_meta(staging, "sharded", {"global_step": 5})
    commit_dir(staging, tmp_path / "s")
    return tmp_path / "s"


def test_sharded_checkpoints_load_verify_and_resolve(tmp_path):
    from deepseek.checkpoint import load_weights, resolve_checkpoint_path

    path = _sharded(tmp_path)
    ckpt = load_checkpoint(path)
    assert ckpt.kind == "sharded" and ckpt.model_state == {} and ckpt.trainer_state == {"step": 5}
    assert resolve_checkpoint_path(tmp_path, "last", require_full=True) == path
    with pytest.raises(CheckpointError, match="sharded checkpoint.*consolidate"):
        load_weights(nn.Linear(2, 2), path)
    shard = path / "sharded" / "__0_0.distcp"
    shard.write_bytes(bytes(reversed(range(256))))
    with pytest.raises(CheckpointError, match=r"__0_0.distcp is corrupted.*checksum"):
        load_checkpoint(path)


def test_meta_listing_a_path_outside_the_checkpoint_is_refused(tmp_path):
    import json

    path = save_checkpoint(tmp_path / "c", {"w": torch.ones(1)})
    (tmp_path / "secret").write_text("x")
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["../secret"] = 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a file inside the checkpoint directory"):
        load_checkpoint(path)
