"""The ``iterative_pruning`` callback: channels removed in steps at chosen epochs, the
optimizer rebuilt each time, training going on, and resume continuing a pruned run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import deepseek as ds
from deepseek.callbacks import Callback
from deepseek.pruning import IterativePruning


def net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
    )  # fmt: skip


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(192, 1, 6, 6, generator=g)
    y = (x[:, 0, :3].mean((1, 2)) > x[:, 0, 3:].mean((1, 2))).long() + (x.mean((1, 2, 3)) > 0.3)
    return TensorDataset(x, y)


def loss_on(model: nn.Module, dataset: TensorDataset) -> float:
    model.eval()
    with torch.no_grad():
        x, y = dataset.tensors
        return nn.functional.cross_entropy(model(x), y).item()


class SaveAfter(Callback):
    """Write a full checkpoint at the end of the given epoch (as ModelCheckpoint does)."""

    def __init__(self, epoch: int, path: Path) -> None:
        self.epoch, self.path = epoch, path

    def on_train_epoch_end(self, trainer) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.save_checkpoint(self.path)


def trainer_for(model: nn.Module, callbacks: list, root: Path, epochs: int = 4) -> ds.Trainer:
    return ds.Trainer(
        model,
        torch.optim.AdamW,
        {"lr": 0.01},
        train_data=data(),
        batch_size=32,
        loss_fn=nn.functional.cross_entropy,
        max_epochs=epochs,
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR,
        scheduler_kwargs={"T_max": epochs},
        scheduler_interval="epoch",
        callbacks=callbacks,
        seed=0,
        enable_progress_bar=False,
        default_root_dir=root,
    )


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("iterative")
    torch.manual_seed(0)
    model = net()
    start_params = sum(p.numel() for p in model.parameters())
    start_loss = loss_on(model, data())
    pruning = IterativePruning(amount=0.5, epochs=[1, 2], verbose=False)
    trainer = trainer_for(model, [pruning, SaveAfter(1, root / "after_epoch_1")], root)
    trainer.fit()
    return root, model, trainer, pruning, start_params, start_loss


def test_parameters_shrink_at_each_scheduled_epoch(full_run) -> None:
    _, model, _, pruning, start_params, _ = full_run
    assert [h["epoch"] for h in pruning.history] == [1, 2]
    first, second = (h["params"] for h in pruning.history)
    assert start_params > first > second
    # Step 1 keeps 75% of each hidden layer's channels, step 2 keeps 50%; the head keeps
    # its 3 outputs.
    assert (model[0].out_channels, model[3].out_channels, model[8].out_features) == (8, 8, 3)
    assert model[1].num_features == 8 and model[8].in_features == 8


def test_training_goes_on_with_a_rebuilt_optimizer(full_run) -> None:
    _, model, trainer, _, _, start_loss = full_run
    params = trainer.optimizer.param_groups[0]["params"]
    assert [id(p) for p in params] == [id(p) for p in model.parameters()]
    assert trainer.scheduler.optimizer is trainer.optimizer
    assert loss_on(model, data()) < 0.8 * start_loss


def test_resume_from_a_pruned_checkpoint_continues_the_run_exactly(full_run) -> None:
    """A fresh (unpruned) model resumed from the checkpoint taken after the first step is
    shrunk to its shapes, prunes again at epoch 2, and ends where the full run ended."""
    root, model, _, _, _, _ = full_run
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed_model = net()
    pruning = IterativePruning(amount=0.5, epochs=[1, 2], verbose=False)
    trainer = trainer_for(resumed_model, [pruning], root / "resumed")
    trainer.fit(resume=root / "after_epoch_1")
    assert pruning.steps_done == 2 and [h["epoch"] for h in pruning.history] == [1, 2]
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resuming_without_the_callback_fails_on_the_shapes(full_run, tmp_path: Path) -> None:
    root = full_run[0]
    trainer = trainer_for(net(), [], tmp_path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        trainer.fit(resume=root / "after_epoch_1")


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="must lie in"):
        IterativePruning(amount=1.0, epochs=[1])
    with pytest.raises(ValueError, match="increasing"):
        IterativePruning(amount=0.5, epochs=[3, 1])
    with pytest.raises(ValueError, match="non-empty"):
        IterativePruning(amount=0.5, epochs=[])


def test_it_is_a_registered_callback() -> None:
    from deepseek.plugins import registry

    cb = registry("callback").create("iterative_pruning", amount=0.5, epochs=[2, 4])
    assert isinstance(cb, IterativePruning) and cb.kept_fraction(1) == 0.75
