"""Segmentation losses with MONAI's argument names, defaults and values.

``DiceLoss``, ``FocalLoss``, ``DiceFocalLoss``, ``DiceCELoss`` and ``DeepSupervisionLoss``
(for networks that return several heads). All compute in fp32 inside autocast.
"""

from deepseek.vision.losses.deep_supervision import DeepSupervisionLoss
from deepseek.vision.losses.dice import DiceCELoss, DiceFocalLoss, DiceLoss
from deepseek.vision.losses.focal_loss import FocalLoss

__all__ = ["DeepSupervisionLoss", "DiceCELoss", "DiceFocalLoss", "DiceLoss", "FocalLoss"]
