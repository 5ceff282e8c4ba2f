"""The ROCm backend (AMD GPUs). torch's ROCm build exposes them as ``cuda`` devices and
runs collectives with RCCL under the ``nccl`` backend name."""

from __future__ import annotations

import torch

from deepseek.backends.cuda import CUDABackend


class ROCmBackend(CUDABackend):
    name = "rocm"
    device_type = "cuda"
    collective_backend = "nccl"
    collective_library = "rccl"
    priority = 90
    visible_devices_env = "HIP_VISIBLE_DEVICES"

    def _right_build(self) -> bool:
        return getattr(torch.version, "hip", None) is not None

    def describe(self) -> dict:
        info = super().describe()
        info["version"] = getattr(torch.version, "hip", None)
        return info
