"""The CUDA backend (NVIDIA GPUs through torch's CUDA build)."""

from __future__ import annotations

import os

import torch

from deepseek.backends.base import Backend


class CUDABackend(Backend):
    name = "cuda"
    device_type = "cuda"
    collective_backend = "nccl"
    collective_library = "nccl"
    priority = 100
    visible_devices_env = "CUDA_VISIBLE_DEVICES"

    def _right_build(self) -> bool:
        return torch.version.cuda is not None

    def is_available(self) -> bool:
        return self._right_build() and torch.cuda.is_available()

    def unavailable_reason(self) -> str | None:
        if self.is_available():
            return None
        if not self._right_build():
            return (
                f"this torch build ({torch.__version__}) has no {self.name.upper()} support; "
                f"install a {self.name.upper()} build of torch"
            )
        visible = os.environ.get(self.visible_devices_env)
        if visible is not None and visible.strip() in ("", "-1"):
            return f"{self.visible_devices_env}={visible!r} hides every GPU; unset it"
        return "no GPU or driver was found (check nvidia-smi / rocm-smi)"

    def device_count(self) -> int:
        # torch honours CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES itself.
        return torch.cuda.device_count() if self.is_available() else 0

    def device(self, index: int | None = None) -> torch.device:
        if index is None:
            # "cuda" without an index follows torch.cuda.current_device(), which
            # torchrun-launched code sets per rank with torch.cuda.set_device.
            return torch.device("cuda", torch.cuda.current_device())
        return super().device(index)

    def native_autocast_dtypes(self) -> tuple[torch.dtype, ...]:
        if not self.is_available():
            return ()
        dtypes = [torch.float16]
        if torch.cuda.is_bf16_supported(including_emulation=False):
            dtypes.insert(0, torch.bfloat16)
        return tuple(dtypes)

    def synchronize(self, device: torch.device | None = None) -> None:
        torch.cuda.synchronize(device)

    def memory_stats(self, device: torch.device | None = None) -> dict[str, int]:
        return {
            "allocated": torch.cuda.memory_allocated(device),
            "peak_allocated": torch.cuda.max_memory_allocated(device),
            "reserved": torch.cuda.memory_reserved(device),
            "peak_reserved": torch.cuda.max_memory_reserved(device),
        }

    def reset_peak_memory_stats(self, device: torch.device | None = None) -> None:
        torch.cuda.reset_peak_memory_stats(device)

    def manual_seed(self, seed: int) -> None:
        super().manual_seed(seed)  # torch.manual_seed seeds every CUDA device too

    def describe(self) -> dict:
        info = super().describe()
        info["version"] = torch.version.cuda
        info[self.visible_devices_env] = os.environ.get(self.visible_devices_env)
        if self.is_available():
            info["devices"] = [torch.cuda.get_device_name(i) for i in range(self.device_count())]
        return info
