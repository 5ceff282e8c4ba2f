"""The module the ``xpu`` entry point names: DeepSeek imports it once, at discovery.

It holds only ``@hookimpl`` functions and imports nothing heavy: the backend is
``deferred`` until ``xpu`` is first used, and the ``deepseek env`` lines import it only
when ``deepseek env`` runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from deepseek.plugins import BackendSpec, deferred, hookimpl


@hookimpl
def deepseek_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            "xpu",
            deferred("deepseek_xpu.backend:XPUBackend"),
            "Intel GPUs through torch.xpu (autocast bf16/fp16, xccl collectives)",
        )
    ]


@hookimpl
def deepseek_env_report() -> Iterable[str]:
    """Lines for ``deepseek env``: the devices (the Backends table gives the reason when
    there are none), the visible-devices variables, the collective backend, and each
    setting that looks wrong."""
    from deepseek_xpu import __version__
    from deepseek_xpu.backend import XPUBackend
    from deepseek_xpu.visible import VARIABLES

    backend = XPUBackend()
    head = f"xpu {__version__}:"
    lines = []
    if backend.is_available():  # else the Backends table already gives the reason
        lines.append(
            f"{head} {backend.device_count()} Intel GPU(s): " + "; ".join(backend.device_names())
        )
    info = backend.describe()
    lines.append(
        f"{head} visible devices "
        + " ".join(
            f"{name}={info[name] if info[name] is not None else '(unset)'}" for name in VARIABLES
        )
    )
    problem = info["collective_problem"]
    lines.append(
        f"{head} collectives {info['collective_backend']} "
        + ("available" if problem is None else f"unavailable ({problem})")
    )
    lines.extend(f"{head} warning: {p}" for p in info["problems"])
    return lines
