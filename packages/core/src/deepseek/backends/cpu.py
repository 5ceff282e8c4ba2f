"""The CPU backend: always available; knows when low precision is emulated."""

from __future__ import annotations

import functools
import os
import resource
import sys

import torch

from deepseek.backends.base import Backend

# CPU feature flags (as /proc/cpuinfo spells them) that make a dtype run natively.
_NATIVE_FLAGS = {
    torch.bfloat16: ("avx512_bf16", "amx_bf16", "bf16"),  # bf16: aarch64's FEAT_BF16
    torch.float16: ("avx512_fp16", "amx_fp16"),
}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags, read once (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_dtypes_from_flags(flags: frozenset[str] | set[str]) -> tuple[torch.dtype, ...]:
    return tuple(dtype for dtype, names in _NATIVE_FLAGS.items() if flags & set(names))


class CPUBackend(Backend):
    name = "cpu"
    device_type = "cpu"
    collective_backend = "gloo"
    collective_library = "gloo"
    priority = 0

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def device(self, index: int | None = None) -> torch.device:
        if index not in (None, 0):
            raise ValueError(f"the cpu backend has one device; got index {index}")
        return torch.device("cpu")

    def device_names(self) -> list[str]:
        return ["cpu"]

    def native_autocast_dtypes(self) -> tuple[torch.dtype, ...]:
        return native_dtypes_from_flags(cpu_flags())

    def precision_note(self, dtype: torch.dtype) -> str | None:
        if dtype in self.native_autocast_dtypes():
            return None
        name = str(dtype).removeprefix("torch.")
        flags = "/".join(_NATIVE_FLAGS.get(dtype, ()))
        return (
            f"this CPU has no native {name} ({flags or 'no such'} instructions missing): "
            f"{name} matmuls are emulated and can be hundreds of times slower than fp32"
        )

    def best_mixed_precision(self) -> str:
        # CPU autocast gains little even with native bf16, and it changes the numerics of
        # every op: "auto" keeps fp32 on the CPU; ask for "bf16-mixed" explicitly.
        return "fp32"

    def memory_stats(self, device: torch.device | None = None) -> dict[str, int]:
        """Resident set size of this process (the CPU has no separate allocator)."""
        stats = {}
        try:
            with open("/proc/self/statm") as f:
                stats["allocated"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            pass
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stats["peak_allocated"] = peak if sys.platform == "darwin" else peak * 1024
        return stats

    def describe(self) -> dict:
        info = super().describe()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["threads"] = torch.get_num_threads()
        return info
