"""The Backend interface: one device family, as the Trainer and check_env see it."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


class Backend:
    """A device family (CPU, CUDA, ROCm, or a plugin's accelerator).

    Subclasses set ``name``, ``device_type`` (torch's name for the device),
    ``collective_backend`` (the ``torch.distributed`` backend) and ``priority`` (higher
    wins in ``backend="auto"``), and override the methods that differ from the CPU.
    """

    name: str = "base"
    device_type: str = "cpu"
    collective_backend: str = "gloo"
    collective_library: str = "gloo"  # what actually runs the collectives (nccl, rccl)
    priority: int = 0

    def is_available(self) -> bool:
        raise NotImplementedError

    def unavailable_reason(self) -> str | None:
        """Why ``is_available()`` is False, in words a user can act on."""
        return None

    def device_count(self) -> int:
        raise NotImplementedError

    def device(self, index: int | None = None) -> torch.device:
        if index is None:
            return torch.device(self.device_type)
        count = self.device_count()
        if not 0 <= index < count:
            raise ValueError(
                f"{self.name} device index {index} is out of range: {count} device(s) visible"
            )
        return torch.device(self.device_type, index)

    def device_names(self) -> list[str]:
        return [str(self.device(i)) for i in range(self.device_count())]

    # -- precision ---------------------------------------------------------------------
    def native_autocast_dtypes(self) -> tuple[torch.dtype, ...]:
        """Lower-precision dtypes this hardware runs natively (fast) under autocast."""
        return ()

    def supports_autocast(self, dtype: torch.dtype) -> bool:
        """Whether autocast to ``dtype`` works at all here (maybe slowly, emulated)."""
        return torch.amp.is_autocast_available(self.device_type)

    def precision_note(self, dtype: torch.dtype) -> str | None:
        """A warning to show when ``dtype`` is requested but not native, else None."""
        if dtype in self.native_autocast_dtypes():
            return None
        return f"{self.name} has no native {dtype} support: it is emulated and slow"

    def best_mixed_precision(self) -> str:
        """The precision name ``precision="auto"`` resolves to on this backend."""
        native = self.native_autocast_dtypes()
        if torch.bfloat16 in native:
            return "bf16-mixed"
        if torch.float16 in native:
            return "fp16-mixed"
        return "fp32"

    # -- runtime -----------------------------------------------------------------------
    def set_device(self, device: torch.device | int) -> None:
        """Make ``device`` this process's current device (each distributed rank calls it
        with its own): torch's ``torch.<device_type>.set_device`` where the device family
        has one; a no-op for the CPU."""
        module = getattr(torch, self.device_type, None)
        if self.device_type != "cpu" and hasattr(module, "set_device"):
            module.set_device(device)

    def synchronize(self, device: torch.device | None = None) -> None:
        """Wait for all queued work on the device (no-op where execution is synchronous)."""

    def memory_stats(self, device: torch.device | None = None) -> dict[str, int]:
        """Bytes in use and peak bytes: ``{"allocated", "peak_allocated", ...}``."""
        return {}

    def reset_peak_memory_stats(self, device: torch.device | None = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        """Seed Python, NumPy and torch (and this device's generators)."""
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def describe(self) -> dict[str, Any]:
        """Facts for ``check_env``; must not fail when the backend is unavailable."""
        available = self.is_available()
        return {
            "name": self.name,
            "available": available,
            "reason": None if available else self.unavailable_reason(),
            "device_type": self.device_type,
            "device_count": self.device_count() if available else 0,
            "devices": self.device_names() if available else [],
            "collective_backend": self.collective_backend,
            "collective_library": self.collective_library,
            "native_autocast_dtypes": [
                str(d).removeprefix("torch.")
                for d in (self.native_autocast_dtypes() if available else ())
            ],
            "auto_precision": self.best_mixed_precision() if available else None,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"
