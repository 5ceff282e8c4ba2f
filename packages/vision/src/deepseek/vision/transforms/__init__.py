"""Transforms on channel-first tensors ``(C, H, W)`` / ``(C, D, H, W)``, image and label
together (``image, label = t(image, label)``), composable on dict samples, seeded by one
``torch.Generator`` per call and run on the tensor's device.
"""

from deepseek.vision.transforms.base import RandomTransform, Transform
from deepseek.vision.transforms.compose import Compose
from deepseek.vision.transforms.crop import CenterCrop, RandomCrop, RandomCropByPosNegLabel
from deepseek.vision.transforms.intensity import (
    CTWindow,
    NormalizeIntensity,
    RandomGaussianNoise,
    ScaleIntensityRange,
)
from deepseek.vision.transforms.spatial import (
    RandomAffine,
    RandomElasticDeformation,
    RandomFlip,
    RandomRotate90,
)

__all__ = [
    "CTWindow",
    "CenterCrop",
    "Compose",
    "NormalizeIntensity",
    "RandomAffine",
    "RandomCrop",
    "RandomCropByPosNegLabel",
    "RandomElasticDeformation",
    "RandomFlip",
    "RandomGaussianNoise",
    "RandomRotate90",
    "RandomTransform",
    "ScaleIntensityRange",
    "Transform",
]
