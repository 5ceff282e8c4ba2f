"""Which Intel GPUs a process may use: ``ZE_AFFINITY_MASK`` and ``ONEAPI_DEVICE_SELECTOR``.

The driver applies both variables itself (the Level Zero loader reads the mask, the SYCL
runtime the selector) before torch counts devices, so ``torch.xpu.device_count()`` is
already the visible count. What the backend adds from them:

- the physical device behind each ``xpu:<i>`` (``ZE_AFFINITY_MASK=1,3`` makes ``xpu:0``
  physical device 1), shown in device names and ``deepseek env``;
- the reason when no device is visible because a variable hides them all
  (``ONEAPI_DEVICE_SELECTOR=opencl:*`` leaves no Level Zero GPU, and torch's ``xpu``
  devices are Level Zero GPUs);
- a problem line for a value the runtime would reject or that names a missing device.

    >>> v = visibility({"ZE_AFFINITY_MASK": "1,3"})
    >>> v.selected, v.hidden_by
    (('1', '3'), None)
    >>> visibility({"ONEAPI_DEVICE_SELECTOR": "opencl:*"}).hidden_by
    "ONEAPI_DEVICE_SELECTOR='opencl:*'"
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

MASK_VAR = "ZE_AFFINITY_MASK"
SELECTOR_VAR = "ONEAPI_DEVICE_SELECTOR"
VARIABLES = (MASK_VAR, SELECTOR_VAR)

_MASK_ENTRY = re.compile(r"\d+(?:\.\d+)*")  # root device, optionally .sub-device (tile)
_SELECTOR_BACKENDS = ("level_zero", "opencl", "cuda", "hip", "native_cpu", "*")
_SELECTOR_DEVICE = re.compile(r"\*|gpu|cpu|fpga|\d+(?:\.(?:\d+|\*))*")


@dataclass(frozen=True)
class Visibility:
    """What the visible-devices variables say.

    ``selected``: the physical device ids behind ``xpu:0, xpu:1, ...`` when a variable
    lists them, else None (every device the driver finds). ``hidden_by``: the
    ``NAME='value'`` that leaves no Intel GPU, else None. ``problems``: values the
    runtime would reject, each with its fix.
    """

    settings: tuple[tuple[str, str], ...] = ()
    selected: tuple[str, ...] | None = None
    hidden_by: str | None = None
    problems: tuple[str, ...] = ()


def visibility(environ: Mapping[str, str] | None = None) -> Visibility:
    """Read ``ZE_AFFINITY_MASK`` and ``ONEAPI_DEVICE_SELECTOR`` from ``environ``
    (default: ``os.environ``).

    >>> visibility({}).selected is None
    True
    >>> visibility({"ONEAPI_DEVICE_SELECTOR": "level_zero:2"}).selected
    ('2',)
    """
    environ = os.environ if environ is None else environ
    settings = tuple((name, environ[name]) for name in VARIABLES if name in environ)
    problems: list[str] = []
    hidden_by = None

    mask = _parse_mask(environ.get(MASK_VAR), problems)
    selector, selector_hides = _parse_selector(environ.get(SELECTOR_VAR), problems)
    if selector_hides:
        hidden_by = f"{SELECTOR_VAR}={environ[SELECTOR_VAR]!r}"

    selected: tuple[str, ...] | None = mask
    if selector is not None:
        if mask is None:
            selected = selector
        elif all(s.isdigit() for s in selector):
            # SYCL numbers the devices the mask left: level_zero:1 is the mask's 2nd entry.
            selected = tuple(mask[int(s)] for s in selector if int(s) < len(mask))
            if not selected:
                hidden_by = f"{SELECTOR_VAR}={environ[SELECTOR_VAR]!r} with {MASK_VAR}"
        else:
            selected = None  # tiles on both sides: leave the mapping to the driver
    return Visibility(settings, selected, hidden_by, tuple(problems))


def _parse_mask(value: str | None, problems: list[str]) -> tuple[str, ...] | None:
    if value is None or not value.strip():
        return None  # unset or empty: the Level Zero loader shows every device
    entries = [e.strip() for e in value.split(",")]
    bad = [e for e in entries if not _MASK_ENTRY.fullmatch(e)]
    if bad:
        problems.append(
            f"{MASK_VAR}={value!r} has entries that are not device ids "
            f"({', '.join(map(repr, bad))}); "
            f"use a comma-separated list of devices or device.tile, e.g. {MASK_VAR}=0,1 or 0.1"
        )
        return None
    return tuple(dict.fromkeys(entries))


def _parse_selector(value: str | None, problems: list[str]) -> tuple[tuple[str, ...] | None, bool]:
    """(level_zero device ids it lists or None, whether it leaves no Level Zero GPU)."""
    if value is None:
        return None, False
    if not value.strip():
        problems.append(
            f"{SELECTOR_VAR} is set but empty; unset it or select Intel GPUs, "
            f"e.g. {SELECTOR_VAR}=level_zero:gpu"
        )
        return None, False
    positive: list[tuple[str, list[str]]] = []
    negative: list[tuple[str, list[str]]] = []
    for term in (t.strip() for t in value.split(";") if t.strip()):
        excluded = term.startswith("!")
        backend, sep, devices = term.lstrip("!").partition(":")
        backend = backend.strip().lower()
        entries = [d.strip().lower() for d in devices.split(",")]
        if (
            not sep
            or backend not in _SELECTOR_BACKENDS
            or not all(_SELECTOR_DEVICE.fullmatch(d) for d in entries)
        ):
            problems.append(
                f"{SELECTOR_VAR}={value!r}: {term!r} is not BACKEND:DEVICES (backends: "
                f"{', '.join(_SELECTOR_BACKENDS)}; devices: *, gpu, cpu, fpga or indices), "
                f"e.g. {SELECTOR_VAR}=level_zero:0,1"
            )
            return None, False
        (negative if excluded else positive).append((backend, entries))

    def reaches_l0_gpus(backend: str, entries: list[str]) -> bool:
        return backend in ("level_zero", "*") and any(
            e in ("*", "gpu") or e[0].isdigit() for e in entries
        )

    def excludes_all_l0_gpus(backend: str, entries: list[str]) -> bool:
        return backend in ("level_zero", "*") and any(e in ("*", "gpu") for e in entries)

    # With only exclusions the SYCL runtime starts from every device; with inclusions,
    # one of them must reach a Level Zero GPU.
    if positive and not any(reaches_l0_gpus(b, e) for b, e in positive):
        return None, True
    if any(excludes_all_l0_gpus(b, e) for b, e in negative):
        return None, True
    ids: list[str] = []
    for backend, entries in positive:
        if backend != "level_zero":
            continue
        if any(e in ("*", "gpu") for e in entries):
            return None, False  # every Level Zero GPU: no explicit list
        ids.extend(entries)
    if negative or not ids:
        return None, False  # indices excluded: the driver renumbers what is left
    return tuple(dict.fromkeys(ids)), False


def count_problem(vis: Visibility, count: int) -> str | None:
    """A problem when the variables list whole devices but the driver exposes another
    number of them (an id that does not exist, most often).

    >>> print(count_problem(visibility({"ZE_AFFINITY_MASK": "0,7"}), 1).split(":")[0])
    ZE_AFFINITY_MASK='0,7' lists 2 device(s) but the driver exposes 1
    """
    if vis.selected is None or not all(s.isdigit() for s in vis.selected):
        return None  # tiles (0.1) can expose a parent device: counts need not match
    if count == len(vis.selected) or count == 0:
        return None
    shown = " ".join(f"{name}={value!r}" for name, value in vis.settings)
    return (
        f"{shown} lists {len(vis.selected)} device(s) but the driver exposes {count}: "
        "check the ids against `xpu-smi discovery` (or `sycl-ls`)"
    )
