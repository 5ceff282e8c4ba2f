"""Structured L1 channel pruning with torch.nn.utils.prune."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepseek.plugins import registry
from deepseek.pruning import L1ChannelPruning, make_permanent


def lowest_l1_channels(weight: torch.Tensor, count: int) -> set[int]:
    norms = weight.detach().abs().flatten(1).sum(dim=1)
    return set(norms.argsort()[:count].tolist())


def zero_channels(weight: torch.Tensor) -> set[int]:
    return set((weight.detach().flatten(1).abs().sum(dim=1) == 0).nonzero().flatten().tolist())


@pytest.mark.parametrize(
    ("layer", "amount"),
    [(nn.Linear(6, 10), 0.3), (nn.Conv2d(3, 8, 3), 0.25), (nn.Conv1d(2, 7, 3), 0.5)],
)
def test_prunes_exactly_the_lowest_l1_output_channels(layer: nn.Module, amount: float) -> None:
    torch.manual_seed(0)
    original = layer.weight.detach().clone()
    channels = original.shape[0]
    expected = lowest_l1_channels(original, round(amount * channels))
    L1ChannelPruning(amount=amount).apply(layer)
    assert zero_channels(layer.weight) == expected
    kept = sorted(set(range(channels)) - expected)
    assert torch.equal(layer.weight[kept], original[kept])
    assert torch.all(layer.bias[sorted(expected)] == 0)


def test_pruned_channels_output_exactly_zero() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3)
    L1ChannelPruning(amount=0.5).apply(conv)
    pruned = sorted(zero_channels(conv.weight))
    out = conv(torch.randn(2, 3, 9, 9))
    assert len(pruned) == 4
    assert torch.all(out[:, pruned] == 0)
    assert torch.all(out[:, sorted(set(range(8)) - set(pruned))].abs().sum((0, 2, 3)) > 0)


def test_every_layer_is_pruned_on_its_own_except_excluded() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3)
    )
    head = model[4].weight.detach().clone()
    L1ChannelPruning(amount=0.5, exclude=["4"]).apply(model)
    assert len(zero_channels(model[0].weight)) == 5
    assert len(zero_channels(model[2].weight)) == 10
    assert not hasattr(model[4], "weight_mask")
    assert torch.equal(model[4].weight, head)


def test_make_permanent_leaves_plain_parameters_with_zero_channels() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    keys = set(model.state_dict())
    pruning = L1ChannelPruning(amount=0.25)
    pruning.apply(model)
    pruned = zero_channels(model[0].weight)
    assert "0.weight_orig" in model.state_dict()
    assert pruning.make_permanent(model) is model
    assert set(model.state_dict()) == keys
    assert not hasattr(model[0], "weight_orig") and not hasattr(model[0], "weight_mask")
    assert not model[0]._forward_pre_hooks
    assert isinstance(model[0].weight, nn.Parameter)
    assert zero_channels(model[0].weight) == pruned


def test_applying_again_prunes_a_fraction_of_what_remains() -> None:
    layer = nn.Linear(4, 8)
    pruning = L1ChannelPruning(amount=0.5)
    pruning.apply(layer)
    pruning.apply(layer)
    assert len(zero_channels(layer.weight)) == 4 + 2
    make_permanent(layer)
    assert len(zero_channels(layer.weight)) == 6


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5, math.nan])
def test_amount_out_of_range(amount: float) -> None:
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        L1ChannelPruning(amount=amount)


@pytest.mark.parametrize("amount", ["0.3", True, None])
def test_amount_of_the_wrong_type(amount: object) -> None:
    with pytest.raises(TypeError, match="amount must be a fraction"):
        L1ChannelPruning(amount=amount)


def test_models_without_prunable_layers_and_unknown_excludes() -> None:
    with pytest.raises(ValueError, match="no Conv1d/Conv2d/Conv3d/Linear layer"):
        L1ChannelPruning().apply(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="exclude names no submodule"):
        L1ChannelPruning(exclude=["classifier"]).apply(nn.Sequential(nn.Linear(2, 2)))


def test_algorithm_from_the_registry() -> None:
    pruning = registry("algorithm").create("l1_channel_pruning", amount=0.5)
    assert isinstance(pruning, L1ChannelPruning)
    layer = pruning.make_permanent(pruning.apply(nn.Linear(3, 6)))
    assert len(zero_channels(layer.weight)) == 3
