"""deepseek-vision's plugin: registers its networks, metrics and the ``deepseek vision``
command. Factories are deferred so that discovering the plugin imports neither torch nor
the network code."""

from __future__ import annotations

from deepseek.plugins import ModelSpec, deferred, hookimpl

_NETWORKS = "deepseek.vision.networks"


@hookimpl
def deepseek_models() -> list[ModelSpec]:
    resnets = [
        ModelSpec(
            name,
            deferred(f"{_NETWORKS}.resnet:{name}"),
            f"{description} (torchvision-compatible keys; num_classes, in_channels)",
            tags=("vision", "classification"),
        )
        for name, description in (
            ("resnet18", "ResNet-18, basic blocks"),
            ("resnet34", "ResNet-34, basic blocks"),
            ("resnet50", "ResNet-50, bottleneck blocks"),
        )
    ]
    segmentation = [
        ModelSpec(
            "unet",
            deferred(f"{_NETWORKS}.unet:UNet"),
            "U-Net, 2-D or 3-D (spatial_dims, in_channels, out_channels, features)",
            tags=("vision", "segmentation"),
        ),
        ModelSpec(
            "unetplusplus",
            deferred(f"{_NETWORKS}.unet:UNetPlusPlus"),
            "U-Net++ with nested skips and deep supervision, 2-D or 3-D",
            tags=("vision", "segmentation"),
        ),
        ModelSpec(
            "unetplusplus3d",
            deferred(f"{_NETWORKS}.unet:UNetPlusPlus"),
            "U-Net++ for volumes (spatial_dims=3 by default)",
            tags=("vision", "segmentation", "3d"),
        ),
        ModelSpec(
            "unetr",
            deferred(f"{_NETWORKS}.unetr:UNETR"),
            "UNETR: ViT encoder, convolutional decoder, 3-D segmentation",
            tags=("vision", "segmentation", "3d", "transformer"),
        ),
        ModelSpec(
            "vit3d",
            deferred(f"{_NETWORKS}.vit:ViT"),
            "Vision Transformer over volume patches (classification head optional)",
            tags=("vision", "classification", "3d", "transformer"),
        ),
    ]
    return resnets + segmentation


try:  # MetricSpec arrives with the plugins rework; older cores simply get no metrics.
    from deepseek.plugins import MetricSpec
except ImportError:  # pragma: no cover - depends on the installed core
    MetricSpec = None


if MetricSpec is not None:

    @hookimpl
    def deepseek_metrics() -> list:
        target = "deepseek.vision.metrics.segmentation:"
        return [
            MetricSpec(
                "dice",
                deferred(target + "DiceMetric"),
                "mean Dice per foreground class of segmentation logits/labels",
                tags=("segmentation",),
            ),
            MetricSpec(
                "iou",
                deferred(target + "IoUMetric"),
                "mean intersection over union per foreground class",
                tags=("segmentation",),
            ),
            MetricSpec(
                "hd95",
                deferred(target + "HausdorffDistance95"),
                "95th percentile symmetric Hausdorff distance (voxels or spacing units)",
                tags=("segmentation",),
            ),
        ]


@hookimpl
def deepseek_cli(parser) -> None:
    from deepseek.vision.cli import add_parser

    add_parser(parser)
