"""deepseek-vision's plugin: registers its networks. Factories are deferred so that
discovering the plugin imports neither torch nor the network code."""

from __future__ import annotations

from deepseek.plugins import ModelSpec, deferred, hookimpl


@hookimpl
def deepseek_models() -> list[ModelSpec]:
    target = "deepseek.vision.networks.resnet:"
    return [
        ModelSpec(
            name,
            deferred(target + name),
            f"{description} (torchvision-compatible keys; num_classes, in_channels)",
            tags=("vision", "classification"),
        )
        for name, description in (
            ("resnet18", "ResNet-18, basic blocks"),
            ("resnet34", "ResNet-34, basic blocks"),
            ("resnet50", "ResNet-50, bottleneck blocks"),
        )
    ]
