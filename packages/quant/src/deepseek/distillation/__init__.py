"""``deepseek.distillation``: knowledge distillation (deepseek-quant).

>>> import torch
>>> from deepseek.distillation import DistillationLoss
>>> loss = DistillationLoss(temperature=2.0, alpha=0.5)
>>> float(loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]))) > 0
True
"""

from __future__ import annotations

from deepseek.distillation.distiller import Distillation, Distiller, build_teacher
from deepseek.distillation.loss import DistillationLoss

__all__ = ["Distillation", "DistillationLoss", "Distiller", "build_teacher"]
