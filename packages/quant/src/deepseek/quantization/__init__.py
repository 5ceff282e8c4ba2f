"""``deepseek.quantization``: int8 post-training quantization (deepseek-quant).

>>> import torch
>>> from deepseek.quantization import quantize_dynamic_int8
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
>>> quantize_dynamic_int8(model)[0].weight().dtype
torch.qint8
"""

from __future__ import annotations

from deepseek.quantization.dynamic import (
    SUPPORTED_MODULES,
    PostTrainingQuantization,
    quantize_dynamic_int8,
)

__all__ = ["SUPPORTED_MODULES", "PostTrainingQuantization", "quantize_dynamic_int8"]
