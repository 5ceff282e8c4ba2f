"""Network architectures: ResNet (torchvision keys), U-Net, U-Net++, ViT, UNETR."""

from deepseek.vision.networks.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    resnet18,
    resnet34,
    resnet50,
)
from deepseek.vision.networks.unet import UNet, UNetPlusPlus, convert_monai_basic_unet_state_dict
from deepseek.vision.networks.unetr import UNETR
from deepseek.vision.networks.vit import ViT

__all__ = [
    "UNETR",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "UNet",
    "UNetPlusPlus",
    "ViT",
    "convert_monai_basic_unet_state_dict",
    "resnet18",
    "resnet34",
    "resnet50",
]
