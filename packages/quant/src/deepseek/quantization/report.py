"""What quantization bought for the model at hand: size and CPU latency, measured."""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class QuantizationReport:
    """Serialized size and median CPU latency of a float model and its int8 version."""

    fp32_bytes: int
    int8_bytes: int
    fp32_ms: float
    int8_ms: float

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / max(self.fp32_bytes, 1)

    @property
    def speedup(self) -> float:
        return self.fp32_ms / max(self.int8_ms, 1e-9)

    def __str__(self) -> str:
        return (
            f"size {self.fp32_bytes / 2**20:.2f} MiB -> {self.int8_bytes / 2**20:.2f} MiB "
            f"({self.size_ratio:.2f}x); latency {self.fp32_ms:.3f} ms -> {self.int8_ms:.3f} ms "
            f"({self.speedup:.2f}x faster)"
        )


def _state_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors (int8 packed weights included), as saved."""
    total = 0
    for value in model.state_dict().values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, tuple):  # dynamic int8 packed (weight, bias)
            total += sum(t.numel() * t.element_size() for t in value if isinstance(t, torch.Tensor))
    if total == 0:  # pragma: no cover - exotic modules: fall back to a serialized size
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        total = buffer.tell()
    return total


def _median_ms(model: nn.Module, inputs: tuple[Any, ...], repeats: int) -> float:
    times = []
    with torch.inference_mode():
        for i in range(repeats + 3):
            start = time.perf_counter()
            model(*inputs)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def quantization_report(
    fp32_model: nn.Module, int8_model: nn.Module, example_inputs: Any, *, repeats: int = 20
) -> QuantizationReport:
    """Measure both models on ``example_inputs`` and warn when int8 is not faster.

    Small layers often run slower in int8 (quantizing activations costs more than the
    int8 matmul saves), so the choice is measured, not assumed.

    >>> import torch
    >>> from deepseek.quantization import quantize_dynamic_int8, quantization_report
    >>> model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU())
    >>> report = quantization_report(model, quantize_dynamic_int8(model), torch.randn(8, 256))
    >>> report.size_ratio < 0.3
    True
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    fp32_model.eval()
    report = QuantizationReport(
        _state_bytes(fp32_model),
        _state_bytes(int8_model),
        _median_ms(fp32_model, inputs, repeats),
        _median_ms(int8_model, inputs, repeats),
    )
    if report.int8_ms >= report.fp32_ms:
        warnings.warn(
            f"int8 measured slower than fp32 for this model ({report.int8_ms:.3f} ms vs "
            f"{report.fp32_ms:.3f} ms): its layers are too small for int8 kernels to pay off "
            "on this CPU; keep it in fp32 or quantize only the large layers",
            UserWarning,
            stacklevel=2,
        )
    return report
