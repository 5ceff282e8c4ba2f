"""Loss functions for segmentation."""

from deepseek.vision.losses.dice import DiceLoss

__all__ = ["DiceLoss"]
