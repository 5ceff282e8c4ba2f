"""``Trainer.rebuild_optimizer()``: parameters replaced mid-run keep their group, learning
rate and (same shape) optimizer state; the scheduler follows; training continues."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import deepseek as ds
from deepseek.callbacks import Callback


def make(optimizer=torch.optim.AdamW, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    trainer = ds.Trainer(
        model,
        optimizer,
        {"lr": 0.1, **kwargs},
        scheduler=torch.optim.lr_scheduler.StepLR,
        scheduler_kwargs={"step_size": 1, "gamma": 0.5},
        enable_progress_bar=False,
        default_root_dir=None,
    )
    return model, trainer


def take_a_step(model: nn.Module, trainer: ds.Trainer) -> None:
    model(torch.randn(3, 4)).sum().backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    trainer.scheduler.step()


def test_replaced_parameters_take_the_old_ones_place() -> None:
    model, trainer = make()
    take_a_step(model, trainer)
    old_state = trainer.optimizer.state[model[0].weight]
    with trainer.rebuild_optimizer():
        model[0].weight = nn.Parameter(model[0].weight.detach().clone())  # same shape
        model[2] = nn.Linear(8, 3)  # new shape: fresh state
    opt = trainer.optimizer
    params = opt.param_groups[0]["params"]
    assert [id(p) for p in params] == [id(p) for p in model.parameters()]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # the scheduled lr, not 0.1
    assert opt.param_groups[0]["initial_lr"] == 0.1
    assert opt.state[model[0].weight] is old_state  # moments kept where the shape held
    assert model[2].weight not in opt.state
    assert trainer.scheduler.optimizer is opt
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()"
        take_a_step(model, trainer)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    assert model[2].weight in opt.state


def test_groups_and_new_parameters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.1}, {"params": model[1].parameters()}],
        lr=0.01,
        momentum=0.9,
    )
    trainer = ds.Trainer(model, optimizer, enable_progress_bar=False, default_root_dir=None)
    with trainer.rebuild_optimizer():
        model[1] = nn.Linear(8, 5)
        model.append(nn.Linear(5, 1))  # a new name joins the first group
    groups = trainer.optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.1, 0.01]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for n, p in model.named_parameters()
                                                    if not n.startswith("1.")}  # fmt: skip
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model[1].parameters()}
    assert all(g["momentum"] == 0.9 for g in groups)


def test_fit_continues_after_a_rebuild_in_a_callback() -> None:
    """A callback swaps the head at epoch 1; the new head trains from then on."""
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))

    class SwapHead(Callback):
        def on_train_epoch_start(self, trainer):
            if trainer.current_epoch == 1:
                with trainer.rebuild_optimizer():
                    trainer.unwrapped_model[2] = nn.Linear(16, 2)
                self.head = trainer.unwrapped_model[2].weight.detach().clone()

    swap = SwapHead()
    trainer = ds.Trainer(
        model,
        torch.optim.Adam,
        {"lr": 0.01},
        train_data=torch.utils.data.TensorDataset(x, y),
        batch_size=16,
        loss_fn=nn.functional.cross_entropy,
        max_epochs=3,
        callbacks=[swap],
        enable_progress_bar=False,
        default_root_dir=None,
    )
    trainer.fit()
    assert not torch.equal(model[2].weight, swap.head)  # the new head was trained


def test_the_body_failing_leaves_the_optimizer_alone() -> None:
    model, trainer = make()
    before = trainer.optimizer
    with pytest.raises(RuntimeError, match="boom"), trainer.rebuild_optimizer():
        raise RuntimeError("boom")
    assert trainer.optimizer is before
