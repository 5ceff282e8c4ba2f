"""The module the ``simaccel`` entry point names: DeepSeek imports it once, at discovery.

It holds only ``@hookimpl`` functions and imports nothing heavy: the backend class is
named with ``deferred`` so it is imported when ``sim`` is first used, not when
``deepseek plugins`` lists it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable

from deepseek.plugins import BackendSpec, CommandParser, deferred, hookimpl
from deepseek_simaccel import __version__

ENV_VAR = "SIMACCEL_DEVICES"  # repeated from .backend to keep this module light


@hookimpl
def deepseek_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            "sim",
            deferred("deepseek_simaccel.backend:SimBackend"),
            "simulated accelerator: SIMACCEL_DEVICES devices on the host CPU (gloo)",
        )
    ]


@hookimpl
def deepseek_cli(parser: CommandParser) -> None:
    info = parser.add_command(
        "simaccel-info", help="show the simulated accelerator's devices", func=run_info
    )
    info.add_argument("--json", action="store_true", help="print the backend's description")


def run_info(args: argparse.Namespace) -> int:
    """``deepseek simaccel-info``: the device count, or why there is none (exit 1)."""
    from deepseek import backends

    try:
        backend = backends.get("sim")
    except RuntimeError as exc:
        print(f"simaccel: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(backend.describe(), indent=2))
    else:
        names = ", ".join(backend.device_names())
        print(f"simaccel: {backend.device_count()} simulated device(s): {names}")
    return 0


@hookimpl
def deepseek_env_report() -> Iterable[str]:
    from deepseek_simaccel.backend import configured_devices

    count, problem = configured_devices()
    if problem:
        return [f"simaccel {__version__}: unavailable ({problem})"]
    setting = os.environ.get(ENV_VAR, "unset, default 2")
    return [
        f"simaccel {__version__}: {count} simulated device(s) on the host CPU ({ENV_VAR}={setting})"
    ]
