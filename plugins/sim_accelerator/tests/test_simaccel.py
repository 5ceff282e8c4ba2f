"""deepseek-plugin-simaccel as users get it: installed as a distribution and discovered
through its ``deepseek`` entry point (the nox ``plugins`` session installs it; locally:
``pip install --no-deps -e plugins/sim_accelerator``)."""

from __future__ import annotations

import doctest
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import deepseek as ds
import deepseek.plugins as plugins
from deepseek.cli import main
from deepseek.plugins import UnknownNameError, registry
from deepseek.utils import check_env

DISTRIBUTION = "deepseek-plugin-simaccel"

try:
    VERSION = importlib.metadata.version(DISTRIBUTION)
except importlib.metadata.PackageNotFoundError:
    pytest.skip(
        f"{DISTRIBUTION} is not installed: pip install --no-deps -e plugins/sim_accelerator",
        allow_module_level=True,
    )

from deepseek_simaccel.backend import SimBackend  # noqa: E402 - needs the skip above


def forget_plugins() -> None:
    plugins.reset_plugin_manager()
    ds.backends._instances.clear()
    importlib.import_module("deepseek.plugins.registry")._REGISTRIES.clear()


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.startswith("DEEPSEEK_") or name == "SIMACCEL_DEVICES":
            monkeypatch.delenv(name)
    forget_plugins()
    yield
    forget_plugins()


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DEEPSEEK_") and k != "SIMACCEL_DEVICES"
    }
    return {**env, **extra}


def deepseek(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deepseek.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(**env),
    )


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    try:
        status = main(list(args))
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


# -- discovery -----------------------------------------------------------------------------


def test_entry_point_is_declared_by_the_distribution() -> None:
    [ep] = importlib.metadata.entry_points(group="deepseek", name="simaccel")
    assert ep.value == "deepseek_simaccel.plugin"
    assert ep.dist is not None and ep.dist.name == DISTRIBUTION


def test_discovered_with_its_distribution_and_version() -> None:
    provider = registry("backend").provider("sim")
    assert provider.name == "simaccel"
    assert (provider.distribution, provider.version) == (DISTRIBUTION, VERSION)
    assert provider.status == "loaded" and not provider.first_party
    record = next(r for r in plugins.plugins() if r.name == "simaccel")
    assert record.registered == {"backend": ["sim"]}


def test_discovery_does_not_import_the_backend_module() -> None:
    code = (
        "import sys, deepseek.plugins as p; "
        "assert 'sim' in p.registry('backend').names(); "
        "print('deepseek_simaccel.backend' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=clean_env()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# -- the backend ---------------------------------------------------------------------------


def test_module_docstring_example_runs() -> None:
    import deepseek_simaccel.backend

    result = doctest.testmod(deepseek_simaccel.backend, report=False)
    assert result.attempted >= 3 and result.failed == 0


def test_sim_backend_by_name() -> None:
    sim = ds.backends.get("sim")
    assert type(sim) is SimBackend and isinstance(sim, ds.backends.Backend)
    assert sim.device_count() == 2
    assert sim.device_names() == ["sim:0", "sim:1"]
    assert sim.device(1) == torch.device("cpu") and sim.device() == torch.device("cpu")
    with pytest.raises(ValueError, match="index 2 is out of range: 2 device"):
        sim.device(2)
    assert sim.collective_backend == "gloo"
    assert sim.native_autocast_dtypes() == ()
    assert sim.best_mixed_precision() == "fp32"
    assert "emulated" in sim.precision_note(torch.bfloat16)
    stats = sim.memory_stats()
    assert stats["allocated"] > 0 and stats["peak_allocated"] > 0
    info = sim.describe()
    assert info["simulated"] and info["device_count"] == 2 and info["available"]


def test_a_training_step_runs_on_a_simulated_device() -> None:
    sim = ds.backends.get("sim")
    sim.manual_seed(0)
    model = torch.nn.Linear(4, 1).to(sim.device(1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4, device=sim.device(1))
    losses = []
    for _ in range(3):
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_device_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMACCEL_DEVICES", "4")
    assert ds.backends.get("sim").device_count() == 4


@pytest.mark.parametrize(
    ("value", "reason"), [("abc", "not a whole number"), ("0", "set it to 1 or more")]
)
def test_bad_device_setting_makes_it_unavailable_with_the_reason(
    value: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMACCEL_DEVICES", value)
    with pytest.raises(RuntimeError, match=f"backend 'sim' is not available: .*{reason}"):
        ds.backends.get("sim")
    assert "sim" not in [b.name for b in ds.backends.available()]
    info = SimBackend().describe()  # still describable for `deepseek env`
    assert not info["available"] and reason in info["reason"]


def test_auto_never_picks_the_simulator() -> None:
    assert ds.backends.get("auto").name != "sim"
    available = ds.backends.available()
    assert available[-1].name == "sim"  # lowest priority of everything available


def _all_reduce(rank: int, world_size: int, store: str) -> None:
    sim = ds.backends.get("sim")
    dist.init_process_group(
        sim.collective_backend, init_method=f"file://{store}", rank=rank, world_size=world_size
    )
    try:
        value = torch.tensor([float(rank + 1)], device=sim.device(rank))
        dist.all_reduce(value)
        assert value.item() == world_size * (world_size + 1) / 2
    finally:
        dist.destroy_process_group()
        # gloo's threads still release the last collective's tensors (taking the GIL):
        # let them before the interpreter finalizes, or the process may abort (exit -6).
        time.sleep(0.1)


def test_gloo_collectives_across_its_devices(tmp_path: Path) -> None:
    world_size = ds.backends.get("sim").device_count()
    torch.multiprocessing.spawn(
        _all_reduce, args=(world_size, str(tmp_path / "store")), nprocs=world_size, join=True
    )


# -- command line and env report -----------------------------------------------------------


def test_cli_subcommand_prints_the_device_count() -> None:
    result = deepseek("simaccel-info")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "simaccel: 2 simulated device(s): sim:0, sim:1"


def test_cli_subcommand_json_follows_the_environment(capsys, monkeypatch) -> None:
    monkeypatch.setenv("SIMACCEL_DEVICES", "3")
    status, out, _ = run_cli(capsys, "simaccel-info", "--json")
    assert status == 0
    assert json.loads(out)["device_count"] == 3


def test_cli_subcommand_fails_with_the_reason(capsys, monkeypatch) -> None:
    monkeypatch.setenv("SIMACCEL_DEVICES", "none")
    status, _, err = run_cli(capsys, "simaccel-info")
    assert status == 1
    assert "SIMACCEL_DEVICES='none' is not a whole number" in err


def test_deepseek_env_shows_the_report_line() -> None:
    result = deepseek("env")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"simaccel {VERSION}: 2 simulated device(s) on the host CPU" in result.stdout
    assert "sim    available   2 device(s)" in result.stdout


# -- turning it off ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEEPSEEK_DISABLED_PLUGINS", "simaccel"),
        ("DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD", "1"),
        ("DEEPSEEK_PLUGINS", "some-other-plugin"),
    ],
)
def test_disabling_removes_everything_it_registered(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv(variable, value)
    record = next(r for r in plugins.plugins() if r.name == "simaccel")
    assert record.status == "disabled" and variable in record.error
    assert "sim" not in ds.backends.names()
    with pytest.raises(UnknownNameError):
        ds.backends.get("sim")
    status, _, err = run_cli(capsys, "simaccel-info")
    assert status == 2 and "unknown command 'simaccel-info'" in err
    assert "plugin 'simaccel' (deepseek-plugin-simaccel) was disabled" in err  # says why
    report = check_env.collect()
    assert not any("simaccel" in line for line in report["plugin_reports"])
    assert "cpu" in ds.backends.names()


def test_listing_it_in_deepseek_plugins_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_PLUGINS", "simaccel")
    assert "sim" in ds.backends.names()
