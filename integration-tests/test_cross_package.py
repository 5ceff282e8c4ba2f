"""Work that spans distributions: models from one package trained by core's Trainer and
compressed by deepseek-quant, all named through the registries."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepseek.plugins import registry
from deepseek.training import Trainer


def test_registered_moe_model_trains_and_quantizes():
    torch.manual_seed(0)
    model = registry("model").create("moe-mlp")
    x = torch.randn(64, _in_features(model))
    y = torch.randint(0, _out_features(model), (64,))
    trainer = Trainer(
        model,
        torch.optim.AdamW,
        {"lr": 1e-2},
        train_data=TensorDataset(x, y),
        batch_size=16,
        loss_fn=nn.functional.cross_entropy,
        max_epochs=2,
        enable_progress_bar=False,
        default_root_dir=None,
    )
    trainer.fit()
    assert trainer.global_step == 8
    int8 = registry("algorithm").create("ptq").apply(model)
    with torch.no_grad():
        ref, out = model.eval()(x), int8(x)
    assert (ref.argmax(1) == out.argmax(1)).float().mean() > 0.9


def test_pruning_a_vision_model():
    model = registry("model").create("resnet18", num_classes=4)
    algorithm = registry("algorithm").create("l1_channel_pruning", amount=0.5)
    pruned = algorithm.apply(model)
    conv = pruned.layer1[0].conv1
    zero_channels = (conv.weight.flatten(1).abs().sum(1) == 0).sum().item()
    assert zero_channels == conv.out_channels // 2
    assert pruned.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _in_features(model: nn.Module) -> int:
    return _linears(model)[0].in_features


def _out_features(model: nn.Module) -> int:
    return _linears(model)[-1].out_features
