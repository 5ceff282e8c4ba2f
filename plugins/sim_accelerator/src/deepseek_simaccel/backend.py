"""The ``sim`` backend: N simulated devices that all compute on the host CPU.

Code written for several accelerators (device indices, one process per device, gloo
collectives between them) runs unchanged on a laptop or a CI runner::

    >>> import deepseek as ds
    >>> sim = ds.backends.get("sim")
    >>> sim.device_count()  # SIMACCEL_DEVICES, default 2
    2
    >>> sim.device(1)  # every simulated device is the host CPU
    device(type='cpu')
"""

from __future__ import annotations

import os
from typing import Any

import torch

from deepseek.backends import Backend
from deepseek.backends.cpu import CPUBackend

ENV_VAR = "SIMACCEL_DEVICES"
DEFAULT_DEVICES = 2


def configured_devices() -> tuple[int, str | None]:
    """``(device count, problem)`` from ``SIMACCEL_DEVICES``; the count is 0 when the
    variable is unusable and ``problem`` says how to fix it."""
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return DEFAULT_DEVICES, None
    try:
        count = int(raw)
    except ValueError:
        return 0, (
            f"{ENV_VAR}={raw!r} is not a whole number; set it to the number of simulated "
            f"devices, e.g. {ENV_VAR}={DEFAULT_DEVICES}"
        )
    if count < 1:
        return 0, f"{ENV_VAR}={raw} leaves no simulated device; set it to 1 or more"
    return count, None


class SimBackend(Backend):
    """A simulated accelerator: ``SIMACCEL_DEVICES`` devices backed by the host CPU.

    It has no fast low-precision dtypes (autocast works, emulated), runs collectives with
    gloo, and ranks below ``cpu`` so ``backend="auto"`` never picks a simulator.
    """

    name = "sim"
    device_type = "cpu"  # tensors live in host memory
    collective_backend = "gloo"
    collective_library = "gloo"
    priority = -10

    def is_available(self) -> bool:
        return configured_devices()[1] is None

    def unavailable_reason(self) -> str | None:
        return configured_devices()[1]

    def device_count(self) -> int:
        return configured_devices()[0]

    def device(self, index: int | None = None) -> torch.device:
        if index is not None:
            super().device(index)  # the standard range check and message
        return torch.device("cpu")

    def device_names(self) -> list[str]:
        return [f"sim:{i}" for i in range(self.device_count())]

    def memory_stats(self, device: torch.device | None = None) -> dict[str, int]:
        return CPUBackend().memory_stats(device)  # simulated devices share host memory

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["simulated"] = True
        info[ENV_VAR] = os.environ.get(ENV_VAR)
        return info
