"""Balancing in training: the aux losses reach the gradients (through the Trainer), the
selection bias moves after optimizer steps, metrics and plots are written."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import deepseek as ds
from deepseek.moe import MoEClassifier, MoELayer
from deepseek.moe.balancing import MoELoadBalancing, auxiliary_loss, moe_layers


class PlainMoE(nn.Module):
    """A model that knows nothing about auxiliary losses."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.moe = MoELayer(8, 16, num_experts=4, top_k=2, activation="swiglu")
        self.out = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.moe(self.inp(x)))


def one_sgd_step(model, data, callbacks=(), loss_fn=None, **kwargs):
    trainer = ds.Trainer(
        model,
        torch.optim.SGD,
        optimizer_kwargs={"lr": 1.0},
        train_data=data,
        batch_size=len(data),
        loss_fn=loss_fn,
        max_steps=1,
        callbacks=list(callbacks),
        enable_progress_bar=False,
        default_root_dir=None,
        shuffle=False,
        **kwargs,
    )
    trainer.fit()
    return trainer


def expected_gate_after_step(model, loss_of) -> torch.Tensor:
    model.zero_grad()
    loss_of(model).backward()
    gate = model.moe.router.gate.weight
    expected = (gate - gate.grad).detach()
    model.zero_grad(set_to_none=True)  # the Trainer's first backward starts from no grads
    return expected


def test_classifier_aux_loss_reaches_the_gradients_through_the_trainer():
    # Issue 7: MoEClassifier.aux_loss was computed but never added to the loss.
    torch.manual_seed(0)
    model = MoEClassifier(in_features=6, num_classes=3, d_model=8, d_hidden=16, aux_loss_coef=5.0)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))

    def loss_of(m):
        return nn.functional.cross_entropy(m(x), y) + 5.0 * m.aux_loss

    expected = expected_gate_after_step(model, loss_of)
    without_aux = expected_gate_after_step(model, lambda m: nn.functional.cross_entropy(m(x), y))
    assert not torch.allclose(expected, without_aux, atol=1e-4)  # the aux term matters
    # Even when the job passes a loss_fn (validation uses it), training adds the aux loss.
    one_sgd_step(model, TensorDataset(x, y), loss_fn=nn.functional.cross_entropy)
    torch.testing.assert_close(model.moe.router.gate.weight.detach(), expected)


def test_callback_adds_weighted_losses_to_a_plain_model():
    torch.manual_seed(0)
    model = PlainMoE()
    x, y = torch.randn(24, 6), torch.randn(24, 1)

    def loss_of(m):
        loss = nn.functional.mse_loss(m(x), y)
        return loss + 2.0 * m.moe.aux_loss + 0.5 * m.moe.z_loss + 1.0 * m.moe.device_aux_loss

    expected = expected_gate_after_step(model, loss_of)
    balancing = MoELoadBalancing(
        aux_loss_coef=2.0, z_loss_coef=0.5, device_aux_loss_coef=1.0, plot=False
    )
    trainer = one_sgd_step(model, TensorDataset(x, y), [balancing], loss_fn=nn.functional.mse_loss)
    torch.testing.assert_close(model.moe.router.gate.weight.detach(), expected)
    assert trainer.metrics["moe_load_ratio"] >= 1.0
    assert 0.0 <= trainer.metrics["moe_dropped_fraction"] <= 1.0


def test_callback_sets_coefficients_of_models_that_add_them_once():
    torch.manual_seed(0)
    model = MoEClassifier(in_features=6, num_classes=3, d_model=8, d_hidden=16, aux_loss_coef=0.0)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    expected = expected_gate_after_step(
        model, lambda m: nn.functional.cross_entropy(m(x), y) + 3.0 * m.aux_loss
    )
    one_sgd_step(model, TensorDataset(x, y), [MoELoadBalancing(aux_loss_coef=3.0, plot=False)])
    torch.testing.assert_close(model.moe.router.gate.weight.detach(), expected)
    assert model.aux_loss_coefs["aux_loss"] == 3.0


def test_bias_moves_once_per_optimizer_step_and_metrics_and_plots_are_written(tmp_path):
    torch.manual_seed(0)
    model = PlainMoE()
    data = TensorDataset(torch.randn(32, 6), torch.randn(32, 1))
    rate = 0.01
    balancing = MoELoadBalancing(bias_update_rate=rate)
    trainer = ds.Trainer(
        model,
        torch.optim.SGD,
        optimizer_kwargs={"lr": 0.01},
        train_data=data,
        batch_size=8,
        loss_fn=nn.functional.mse_loss,
        max_epochs=2,
        accumulate_grad_batches=2,
        callbacks=[balancing],
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit()
    assert trainer.global_step == 4
    bias = model.moe.router.score_bias
    steps = bias / rate  # each update moves every expert by -rate, 0 or +rate
    torch.testing.assert_close(steps, steps.round())
    assert steps.abs().max() <= trainer.global_step
    assert bias.abs().sum() > 0
    assert (tmp_path / "moe_load" / "epoch_0.png").is_file()
    assert (tmp_path / "moe_load" / "epoch_1.png").is_file()
    assert len(balancing.history) == 2
    for epoch in balancing.history:
        assert sum(epoch["moe"]) == pytest.approx(1.0)
    assert balancing.state_dict()["history"] == balancing.history


def test_auxiliary_loss_sums_every_layer():
    torch.manual_seed(0)
    model = nn.Sequential(MoELayer(8, 8, 4), MoELayer(8, 8, 4))
    model(torch.randn(5, 8))
    assert len(moe_layers(model)) == 2
    expected = 0.1 * (model[0].aux_loss + model[1].aux_loss)
    torch.testing.assert_close(auxiliary_loss(model, aux_loss_coef=0.1), expected)


def test_bad_callback_options_and_models_without_moe_layers():
    with pytest.raises(ValueError, match="bias_update_rate"):
        MoELoadBalancing(bias_update_rate=-1)
    with pytest.raises(ValueError, match="log_every_n_steps"):
        MoELoadBalancing(log_every_n_steps=0)
    data = TensorDataset(torch.randn(4, 3), torch.randn(4, 1))
    with pytest.raises(ValueError, match="has no deepseek.moe.MoELayer"):
        one_sgd_step(nn.Linear(3, 1), data, [MoELoadBalancing()], loss_fn=nn.functional.mse_loss)
