"""``ds.optim``: torch.optim plus ``MixedPrecisionTrainer``."""

from typing import Any

from torch.optim import *
from torch.optim import lr_scheduler


def __getattr__(name: str) -> Any:
    # Lazy: the training engine is heavier than the optimizers.
    if name == "MixedPrecisionTrainer":
        from deepseek.training import MixedPrecisionTrainer

        return MixedPrecisionTrainer
    raise AttributeError(f"module 'deepseek.optim' has no attribute {name!r}")
