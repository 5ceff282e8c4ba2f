"""Segmentation metrics (registered for the Trainer as ``dice``, ``iou``, ``hd95``)."""

from deepseek.vision.metrics.segmentation import (
    DiceMetric,
    HausdorffDistance95,
    IoUMetric,
    dice_score,
    hausdorff_distance_95,
    iou_score,
    surface_mask,
)

__all__ = [
    "DiceMetric",
    "HausdorffDistance95",
    "IoUMetric",
    "dice_score",
    "hausdorff_distance_95",
    "iou_score",
    "surface_mask",
]
