"""deepseek-xpu as a user meets it: the real ``deepseek`` CLI in a subprocess, with the
installed distribution discovered through its entry point and this machine's real torch
(nothing is faked here)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DISTRIBUTION = "deepseek-xpu"
try:
    VERSION = importlib.metadata.version(DISTRIBUTION)
except importlib.metadata.PackageNotFoundError:
    pytest.skip(
        f"{DISTRIBUTION} is not installed: pip install -c constraints.txt -e plugins/xpu",
        allow_module_level=True,
    )

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OURS = ("ZE_AFFINITY_MASK", "ONEAPI_DEVICE_SELECTOR")
pytestmark = pytest.mark.skipif(
    getattr(torch.version, "xpu", None) is not None,
    reason="checks the unavailable case: this torch is an XPU build",
)


def deepseek(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEEPSEEK_") and k not in OURS}
    return subprocess.run(
        [sys.executable, "-m", "deepseek.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**clean, "OMP_NUM_THREADS": "1", **env},
    )


def test_deepseek_plugins_lists_it_and_check_passes() -> None:
    listing = deepseek("plugins")
    assert listing.returncode == 0, listing.stderr
    assert f"xpu  ({DISTRIBUTION} {VERSION})  loaded" in listing.stdout
    lines = listing.stdout.splitlines()
    ours = lines.index(f"xpu  ({DISTRIBUTION} {VERSION})  loaded")
    description = "Intel GPUs through torch.xpu (autocast bf16/fp16, xccl collectives)"
    assert lines[ours + 1].split() == ["backends", "xpu", *description.split()]
    check = deepseek("plugins", "--check", "xpu")
    assert check.returncode == 0, check.stdout + check.stderr


def test_deepseek_env_shows_it_unavailable_with_its_reason() -> None:
    result = deepseek("env")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    reason = (
        f"this torch build ({torch.__version__}) has no XPU support; install an XPU build of "
        "torch (pip install torch --index-url https://download.pytorch.org/whl/xpu)"
    )
    assert f"  xpu    unavailable ({reason})" in out.splitlines()
    assert f"  xpu         {DISTRIBUTION} {VERSION}" in out
    assert (
        f"xpu {VERSION}: visible devices ZE_AFFINITY_MASK=(unset) ONEAPI_DEVICE_SELECTOR=(unset)"
        in out.splitlines()
    )
    assert (
        f"xpu {VERSION}: collectives xccl unavailable (torch {torch.__version__} is not an XPU "
        "build, so it has no xccl)" in out.splitlines()
    )


def test_deepseek_env_json_and_the_visible_devices_variables() -> None:
    result = deepseek(
        "env", "--json", ZE_AFFINITY_MASK="tile0", ONEAPI_DEVICE_SELECTOR="level_zero:gpu"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (info,) = [b for b in report["backends"] if b["name"] == "xpu"]
    assert info["available"] is False and info["device_count"] == 0
    assert info["ZE_AFFINITY_MASK"] == "tile0"
    assert info["ONEAPI_DEVICE_SELECTOR"] == "level_zero:gpu"
    assert info["collective_backend"] == "xccl" and info["collective_library"] == "oneccl"
    warnings = [line for line in report["plugin_reports"] if "warning" in line]
    assert warnings == [
        f"xpu {VERSION}: warning: ZE_AFFINITY_MASK='tile0' has entries that are not device ids "
        "('tile0'); use a comma-separated list of devices or device.tile, e.g. "
        "ZE_AFFINITY_MASK=0,1 or 0.1"
    ]


def test_deepseek_env_backend_xpu_fails_with_the_reason() -> None:
    result = deepseek("env", "--backend", "xpu")
    assert result.returncode == 1
    assert "[error] backend 'xpu' is not available: this torch build" in result.stdout


def test_disabling_the_plugin_removes_it() -> None:
    result = deepseek("env", DEEPSEEK_DISABLED_PLUGINS="xpu")
    assert result.returncode == 0, result.stderr
    assert "  xpu    unavailable" not in result.stdout  # no backend row
    assert f"xpu {VERSION}:" not in result.stdout  # no env report lines
    assert f"{DISTRIBUTION} {VERSION}    disabled (disabled by DEEPSEEK_DISABLED_PLUGINS)" in (
        result.stdout
    )


def test_the_example_job_stops_with_one_line_saying_why(tmp_path: Path) -> None:
    for name in ("xpu.yaml", "xpujob.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    result = deepseek("train", "xpu.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    first, hint = result.stderr.strip().splitlines()[-2:]
    assert first.startswith(
        "deepseek train: error: RuntimeError: backend 'xpu' is not available: "
        f"this torch build ({torch.__version__}) has no XPU support"
    )
    assert hint == "(run again with --traceback for the full traceback)"


def test_the_example_job_config_is_valid(tmp_path: Path) -> None:
    result = deepseek("train", str(EXAMPLES / "xpu.yaml"), "--print-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "backend: xpu" in result.stdout
