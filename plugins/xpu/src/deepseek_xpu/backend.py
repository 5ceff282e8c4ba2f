"""The ``xpu`` backend: Intel GPUs (Data Center GPU Max, Arc, integrated Xe) through
torch's own XPU support (``torch.xpu``, autocast ``device_type="xpu"``, the ``xccl``
collective backend of torch >= 2.8).

On a machine without an XPU build of torch or without an Intel GPU it is registered but
unavailable, and says why::

    >>> from deepseek.plugins import registry
    >>> xpu = registry("backend").create("xpu")  # ds.backends.get("xpu") raises if unavailable
    >>> xpu.name, xpu.device_type, xpu.collective_backend
    ('xpu', 'xpu', 'xccl')
    >>> xpu.is_available() == (xpu.unavailable_reason() is None)
    True

Every device fact is read through :data:`deepseek_xpu.device._torch_xpu` at call time
(never cached), so the answers follow the environment and tests can swap that one object.
"""

from __future__ import annotations

from typing import Any

import torch

from deepseek.backends import Backend
from deepseek_xpu import device as _device
from deepseek_xpu.visible import VARIABLES, count_problem, visibility

XCCL_SINCE = (2, 8)  # torch release whose XPU wheels ship the built-in xccl backend
INSTALL_HINT = "pip install torch --index-url https://download.pytorch.org/whl/xpu"


def _facts() -> _device.TorchXPU:
    return _device._torch_xpu  # looked up per call: the seam tests replace


def _torch_release(version: str) -> tuple[int, int]:
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def _index(device: torch.device | int | str | None) -> int | None:
    if device is None or isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "xpu":
        raise ValueError(f"the xpu backend got a {device.type} device: {device}")
    return device.index


class XPUBackend(Backend):
    """Intel GPUs through ``torch.xpu``; ranks below cuda and rocm, above cpu, so
    ``backend="auto"`` picks it on a machine whose only accelerators are Intel GPUs."""

    name = "xpu"
    device_type = "xpu"
    collective_library = "oneccl"
    priority = 80

    # -- availability ------------------------------------------------------------------
    def is_available(self) -> bool:
        facts = _facts()
        return facts.xpu_build() is not None and facts.device_count() > 0

    def unavailable_reason(self) -> str | None:
        """Why there is no usable Intel GPU, most basic cause first."""
        facts = _facts()
        if facts.xpu_build() is None:
            return (
                f"this torch build ({facts.torch_version()}) has no XPU support; "
                f"install an XPU build of torch ({INSTALL_HINT})"
            )
        if facts.device_count() > 0:
            return None
        vis = visibility()
        if vis.hidden_by:
            return f"{vis.hidden_by} hides every Intel GPU; unset it or select level_zero:gpu"
        if vis.problems:
            return vis.problems[0]
        return (
            "no Intel GPU was found by the Level Zero driver (check `xpu-smi discovery` or "
            "`sycl-ls`, that the intel-level-zero-gpu driver is installed and that this user "
            "is in the 'render' group)"
        )

    def device_count(self) -> int:
        """Visible Intel GPUs: the driver has already applied ZE_AFFINITY_MASK and
        ONEAPI_DEVICE_SELECTOR, so this is torch's count (0 when unavailable)."""
        return _facts().device_count() if self.is_available() else 0

    def device(self, index: int | None = None) -> torch.device:
        """``xpu:<index>``; without an index, the device this process selected (each
        torchrun rank selects its own with :meth:`set_device`)."""
        if index is None:
            if self.is_available():
                return torch.device("xpu", _facts().current_device())
            return torch.device("xpu")
        return super().device(index)

    def set_device(self, device: torch.device | int) -> None:
        """Make ``device`` this process's current Intel GPU."""
        index = _index(self.device(device) if isinstance(device, int) else device)
        if index is not None:  # a bare "xpu" is the current device already
            _facts().set_device(index)

    def physical_ids(self) -> list[str | None]:
        """The physical device (or device.tile) behind each ``xpu:<i>``, where the
        visible-devices variables list them; None where they do not."""
        count = self.device_count()
        selected = visibility().selected
        if selected is None or len(selected) != count:
            return [None] * count
        return list(selected)

    def device_names(self) -> list[str]:
        """``"xpu:0 Intel(R) Data Center GPU Max 1550 (64.0 GiB)"``, with the physical id
        when ZE_AFFINITY_MASK / ONEAPI_DEVICE_SELECTOR remaps it."""
        facts = _facts()
        names = []
        for i, physical in enumerate(self.physical_ids()):
            props = facts.properties(i)
            name = f"xpu:{i} {props.name} ({props.total_memory / 2**30:.1f} GiB)"
            names.append(name + (f" [physical {physical}]" if physical is not None else ""))
        return names

    # -- precision ---------------------------------------------------------------------
    def native_autocast_dtypes(self) -> tuple[torch.dtype, ...]:
        """bf16 where the current device has bf16 conversions, fp16 where it has fp16."""
        if not self.is_available():
            return ()
        facts = _facts()
        props = facts.properties(facts.current_device())
        dtypes = []
        if props.has_bfloat16_conversions:
            dtypes.append(torch.bfloat16)
        if props.has_fp16:
            dtypes.append(torch.float16)
        return tuple(dtypes)

    def supports_autocast(self, dtype: torch.dtype) -> bool:
        """Autocast on ``xpu`` runs bf16 and fp16 (torch's XPU autocast dtypes)."""
        return (
            self.is_available()
            and _facts().autocast_available()
            and dtype in (torch.bfloat16, torch.float16)
        )

    # -- collectives -------------------------------------------------------------------
    @property
    def collective_backend(self) -> str:  # type: ignore[override]
        """``xccl`` (built into torch >= 2.8's XPU wheels); ``ccl`` where only the older
        oneccl_bindings_for_pytorch provide collectives; ``xccl`` when neither is present
        (``deepseek.distributed`` then says it is missing before any rendezvous)."""
        facts = _facts()
        if facts.collective_available("xccl"):
            return "xccl"
        if facts.collective_available("ccl"):
            return "ccl"
        return "xccl"

    def collective_problem(self) -> str | None:
        """Why ``collective_backend`` cannot create a process group here, else None."""
        facts = _facts()
        name = self.collective_backend
        if facts.collective_available(name):
            return None
        version = facts.torch_version()
        if _torch_release(version) < XCCL_SINCE:
            return (
                f"torch {version} predates the built-in xccl backend (torch >= "
                f"{'.'.join(map(str, XCCL_SINCE))}); upgrade torch or install "
                "oneccl_bindings_for_pytorch (backend 'ccl')"
            )
        if facts.xpu_build() is None:
            return f"torch {version} is not an XPU build, so it has no xccl"
        return f"torch {version} was built without xccl; install an XPU wheel ({INSTALL_HINT})"

    # -- runtime -----------------------------------------------------------------------
    def synchronize(self, device: torch.device | int | None = None) -> None:
        """Wait for the queued kernels on ``device`` (default: the current one)."""
        if self.is_available():
            _facts().synchronize(_index(device))

    def memory_stats(self, device: torch.device | int | None = None) -> dict[str, int]:
        """Bytes allocated / reserved by torch's XPU caching allocator, and their peaks."""
        if not self.is_available():
            return {}
        return _facts().memory(_index(device))

    def reset_peak_memory_stats(self, device: torch.device | int | None = None) -> None:
        if self.is_available():
            _facts().reset_peak_memory_stats(_index(device))

    def manual_seed(self, seed: int) -> None:
        """Seed Python, NumPy, torch and every visible Intel GPU's generator."""
        super().manual_seed(seed)
        if self.is_available():
            _facts().manual_seed_all(seed)

    def problems(self) -> list[str]:
        """Settings that look wrong even though torch may still run (for ``deepseek env``)."""
        vis = visibility()
        found = list(vis.problems)
        mismatch = count_problem(vis, self.device_count())
        if mismatch:
            found.append(mismatch)
        return found

    def describe(self) -> dict[str, Any]:
        """``check_env``'s facts, plus the XPU build, the visible-devices variables and
        whether the collective backend can run here."""
        info = super().describe()
        facts = _facts()
        info["version"] = facts.xpu_build()
        for name in VARIABLES:
            info[name] = dict(visibility().settings).get(name)
        info["collective_available"] = facts.collective_available(info["collective_backend"])
        info["collective_problem"] = self.collective_problem()
        info["problems"] = self.problems()
        return info
