"""The device boundary: every fact the ``xpu`` backend learns about Intel GPUs comes
through the one object ``_torch_xpu`` in this module, a thin layer over torch's own APIs
(``torch.xpu``, ``torch.version.xpu``, ``torch.amp``, ``torch.distributed``).

Nothing here decides anything: no parsing, no messages, no fallbacks. That lives in
:mod:`deepseek_xpu.backend` and :mod:`deepseek_xpu.visible`, which read
``device._torch_xpu`` at call time, so a test can replace this one object with a fake
machine (``monkeypatch.setattr(deepseek_xpu.device, "_torch_xpu", FakeXPU(...))``) and
run all the real logic above it on a computer without an Intel GPU.

    >>> from deepseek_xpu import device
    >>> facts = device._torch_xpu
    >>> isinstance(facts.device_count(), int) and isinstance(facts.torch_version(), str)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceFacts:
    """What the backend needs from ``torch.xpu.get_device_properties(i)``.

    >>> DeviceFacts("Intel(R) Arc(TM) A770 Graphics", 16 * 2**30).has_fp16
    True
    """

    name: str
    total_memory: int
    has_fp16: bool = True
    has_bfloat16_conversions: bool = True
    has_fp64: bool = True
    driver_version: str = ""


class TorchXPU:
    """The real boundary: one torch call per method."""

    def torch_version(self) -> str:
        return torch.__version__

    def xpu_build(self) -> str | None:
        """``torch.version.xpu``: the SYCL toolchain torch was built with, None on other builds."""
        return getattr(torch.version, "xpu", None)

    def device_count(self) -> int:
        """Devices the driver exposes (after ZE_AFFINITY_MASK / ONEAPI_DEVICE_SELECTOR)."""
        return torch.xpu.device_count()  # never raises; 0 on a build without XPU

    def properties(self, index: int) -> DeviceFacts:
        p = torch.xpu.get_device_properties(index)
        return DeviceFacts(
            name=p.name,
            total_memory=p.total_memory,
            has_fp16=bool(getattr(p, "has_fp16", True)),
            has_bfloat16_conversions=bool(getattr(p, "has_bfloat16_conversions", False)),
            has_fp64=bool(getattr(p, "has_fp64", True)),
            driver_version=str(getattr(p, "driver_version", "")),
        )

    def current_device(self) -> int:
        return torch.xpu.current_device()

    def set_device(self, index: int) -> None:
        torch.xpu.set_device(index)

    def synchronize(self, device: torch.device | int | None) -> None:
        torch.xpu.synchronize(device)

    def memory(self, device: torch.device | int | None) -> dict[str, int]:
        return {
            "allocated": torch.xpu.memory_allocated(device),
            "peak_allocated": torch.xpu.max_memory_allocated(device),
            "reserved": torch.xpu.memory_reserved(device),
            "peak_reserved": torch.xpu.max_memory_reserved(device),
        }

    def reset_peak_memory_stats(self, device: torch.device | int | None) -> None:
        torch.xpu.reset_peak_memory_stats(device)

    def manual_seed_all(self, seed: int) -> None:
        torch.xpu.manual_seed_all(seed)

    def autocast_available(self) -> bool:
        return torch.amp.is_autocast_available("xpu")

    def collective_available(self, name: str) -> bool:
        """Whether ``torch.distributed`` can create a process group with backend ``name``."""
        import torch.distributed as dist

        return dist.is_available() and dist.is_backend_available(name)


_torch_xpu: TorchXPU = TorchXPU()
