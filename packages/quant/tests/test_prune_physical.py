"""Physical channel pruning: the model really shrinks, couplings are respected, and
removing zero-norm channels changes nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepseek.plugins import registry
from deepseek.pruning import prune


class ResidualNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16),
        )  # fmt: skip
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.stem(x)))
        y = torch.relu(y + self.block(y))  # residual add ties stem and block channels
        z = torch.cat([y, self.grouped(y)], dim=1)  # concatenation
        return self.head(z.mean(dim=(2, 3)))


def test_pruned_model_is_smaller_and_runs() -> None:
    torch.manual_seed(0)
    model = ResidualNet().eval()
    x = torch.randn(2, 3, 16, 16)
    small = prune(model, amount=0.5, example_inputs=x)
    assert small.stem.out_channels == 8
    assert small.bn.num_features == 8
    # The residual add forces the block's last conv to keep the same channels as the stem.
    assert small.block[3].out_channels == small.stem.out_channels
    assert small.head.out_features == 5  # the output layer is never pruned
    assert small(x).shape == (2, 5)
    report = small.pruning_report
    assert report.params_after < 0.35 * report.params_before
    assert report.flops_after < report.flops_before
    # The user's model is untouched.
    assert model.stem.out_channels == 16


def test_removing_zero_norm_channels_keeps_outputs_identical() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()  # fmt: skip
    dead = [1, 3, 4, 6]
    with torch.no_grad():
        for layer, bn, consumer in ((model[0], model[1], model[3]), (model[3], None, model[7])):
            layer.weight[dead] = 0
            layer.bias[dead] = 0
            if bn is not None:
                bn.weight[dead] = 0
                bn.bias[dead] = 0
                bn.running_mean[dead] = 0
            consumer.weight[:, dead] = 0
    x = torch.randn(4, 3, 8, 8)
    small = prune(model, amount=0.5, example_inputs=x)
    assert small[0].out_channels == 4 and small[3].out_channels == 4
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-6)


def test_protected_layers_keep_their_channels() -> None:
    model = ResidualNet().eval()
    small = prune(model, 0.5, torch.randn(1, 3, 8, 8), protected=["grouped"])
    assert small.grouped.out_channels == 16


def test_inplace_and_registry_algorithm() -> None:
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    pruning = registry("algorithm").create("prune", amount=0.25, example_shape=[2, 8], inplace=True)
    out = pruning.apply(model)
    assert out is model and model[0].out_features == 24


@pytest.mark.parametrize("amount", [0, 1, 1.5, -0.1, float("nan")])
def test_amount_outside_zero_one(amount) -> None:
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        prune(nn.Linear(4, 4), amount, torch.randn(1, 4))


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match="example_inputs is required"):
        prune(ResidualNet(), 0.5)
    with pytest.raises(ValueError, match="Did you mean 'stem'"):
        prune(ResidualNet(), 0.5, torch.randn(1, 3, 8, 8), protected=["stemm"])
    with pytest.raises(ValueError, match="no Conv/Linear layer left"):
        prune(nn.Sequential(nn.Linear(4, 2)), 0.5, torch.randn(1, 4))
