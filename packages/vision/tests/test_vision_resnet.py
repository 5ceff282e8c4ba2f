"""deepseek-vision: ResNet parameter counts and torchvision keys, plugin discovery."""

from __future__ import annotations

import pytest
import torch

from deepseek.plugins import registry
from deepseek.vision.networks import ResNet, resnet18, resnet34, resnet50

# torchvision's published parameter counts (1000 classes, 3 input channels).
TORCHVISION_PARAMS = {resnet18: 11_689_512, resnet34: 21_797_672, resnet50: 25_557_032}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(factory, **kwargs) -> ResNet:
    with torch.device("meta"):  # shapes only: fast, no memory
        return factory(**kwargs)


@pytest.mark.parametrize("factory", list(TORCHVISION_PARAMS), ids=lambda f: f.__name__)
def test_parameter_counts_match_torchvision(factory):
    assert count(on_meta(factory)) == TORCHVISION_PARAMS[factory]


def test_parameter_count_follows_num_classes_and_in_channels():
    base = TORCHVISION_PARAMS[resnet18]
    fc_in = 512
    # Only the classifier (fc_in * classes + classes) and the stem conv (64 * c * 7 * 7) change.
    expected = base - (fc_in + 1) * (1000 - 10) - 64 * 7 * 7 * (3 - 1)
    assert count(on_meta(resnet18, num_classes=10, in_channels=1)) == expected


def test_state_dict_keys_follow_torchvision():
    keys18 = resnet18().state_dict()
    for key in (
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.1.conv2.weight",
        "layer1.1.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.weight",
        "layer2.0.downsample.1.running_mean",
        "layer4.1.bn2.bias",
        "fc.weight",
        "fc.bias",
    ):
        assert key in keys18, key
    assert not any(k.startswith("layer1.0.downsample") for k in keys18)
    assert not any("conv3" in k for k in keys18)
    assert keys18["layer3.0.conv1.weight"].shape == (256, 128, 3, 3)
    assert keys18["fc.weight"].shape == (1000, 512)

    keys50 = on_meta(resnet50).state_dict()
    assert keys50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert keys50["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # stride on the 3x3
    assert keys50["layer3.5.conv3.weight"].shape == (1024, 256, 1, 1)
    assert keys50["layer4.2.bn3.running_mean"].shape == (2048,)
    assert keys50["fc.weight"].shape == (1000, 2048)
    assert "layer4.3.conv1.weight" not in keys50


def test_forward_shapes_and_gradients():
    torch.manual_seed(0)
    model = resnet18(num_classes=7, in_channels=1)
    out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model50 = resnet50(num_classes=5).eval()
    with torch.no_grad():
        assert model50(torch.randn(1, 3, 48, 80)).shape == (1, 5)


def test_zero_init_residual_makes_blocks_start_as_identity():
    model = resnet18(zero_init_residual=True)
    assert not model.layer1[0].bn2.weight.any()
    assert model.bn1.weight.all()


def test_resnet_rejects_bad_input():
    model = resnet18(num_classes=3)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*in_channels"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        resnet18(num_classes=0)


def test_plugin_is_discovered_through_its_entry_point():
    models = registry("model")
    assert {"resnet18", "resnet50"} <= set(models.names())
    for name in ("resnet18", "resnet50"):
        assert models.provider(name).distribution == "deepseek-vision"
    model = models.create("resnet18", num_classes=4, in_channels=2)
    assert isinstance(model, ResNet) and model.fc.out_features == 4
    assert model.conv1.in_channels == 2
