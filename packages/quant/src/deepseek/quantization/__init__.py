"""``deepseek.quantization``: quantization-aware training, static and dynamic PTQ, and real
int8 models (deepseek-quant).

>>> import torch
>>> from deepseek.quantization import quantize_dynamic_int8
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
>>> quantize_dynamic_int8(model)[0].weight().dtype
torch.qint8
"""

from __future__ import annotations

from deepseek.quantization.algorithms import FreezeQuantization, QuantizationAwareTraining
from deepseek.quantization.callbacks import CompressionReport, Int8Export
from deepseek.quantization.config import QuantConfig
from deepseek.quantization.dynamic import (
    SUPPORTED_MODULES,
    PostTrainingQuantization,
    load_dynamic_int8,
    quantize_dynamic_int8,
    save_dynamic_int8,
)
from deepseek.quantization.pt2e import (
    Int8Model,
    QuantizedModel,
    calibrate,
    convert,
    load,
    quantize_model,
    save,
)
from deepseek.quantization.report import QuantizationReport, quantization_report

__all__ = [
    "SUPPORTED_MODULES",
    "CompressionReport",
    "Int8Export",
    "FreezeQuantization",
    "QuantizationAwareTraining",
    "Int8Model",
    "PostTrainingQuantization",
    "QuantConfig",
    "QuantizationReport",
    "QuantizedModel",
    "calibrate",
    "convert",
    "load",
    "load_dynamic_int8",
    "quantize_dynamic_int8",
    "quantization_report",
    "quantize_model",
    "save",
    "save_dynamic_int8",
]
