"""The training engine: Trainer, strategies, precisions."""

from deepseek.training.precision import (
    BF16MixedPrecision,
    FP16MixedPrecision,
    FP32Precision,
    Precision,
)
from deepseek.training.strategy import SingleDeviceStrategy, Strategy
from deepseek.training.trainer import MixedPrecisionTrainer, Trainer

__all__ = [
    "BF16MixedPrecision",
    "FP16MixedPrecision",
    "FP32Precision",
    "MixedPrecisionTrainer",
    "Precision",
    "SingleDeviceStrategy",
    "Strategy",
    "Trainer",
]
