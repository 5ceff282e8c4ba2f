"""The ``deepseek`` command line and ``python -m deepseek.utils.check_env``.

End-to-end cases run real subprocesses (plugins come from fake distributions put on
``PYTHONPATH``); the rest call ``deepseek.cli.main`` in this process, with real plugin
discovery from a fresh manager, to keep the file fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from deepseek.cli import main

ON_CUDA_BUILD = torch.version.cuda is not None

CLI_PLUGIN = """
from deepseek.plugins import hookimpl


def hello(args):
    print(f"hello {args.who} from a plugin")
    return args.status


@hookimpl
def deepseek_cli(subparsers):
    parser = subparsers.add_parser("hello", help="greet")
    parser.add_argument("who")
    parser.add_argument("--status", type=int, default=0)
    parser.set_defaults(func=hello)


@hookimpl
def deepseek_env_report():
    return ["hello-plugin: 3 greetings configured"]
"""

BROKEN = 'raise ImportError("this plugin needs libfoo >= 2")\n'

CLASHING = """
from deepseek.plugins import hookimpl


@hookimpl
def deepseek_cli(subparsers):
    subparsers.add_parser("env", help="a plugin trying to take over 'env'")
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPSEEK_")}
    env.pop("OMP_NUM_THREADS", None)
    env.update(extra)
    return env


def deepseek(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deepseek.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or clean_env(),
    )


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``deepseek ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse exits on --version, --help and bad arguments
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def problems(report: dict, severity: str) -> list[dict]:
    return [p for p in report["problems"] if p["severity"] == severity]


def test_env_json_holds_the_report() -> None:
    result = deepseek("env", "--json")
    report = json.loads(result.stdout)
    assert report["python"] == sys.version.split()[0]
    assert report["torch"] == torch.__version__
    backends = {b["name"]: b for b in report["backends"]}
    assert {"cpu", "cuda", "rocm"} <= set(backends)
    assert backends["cpu"]["available"] and backends["cpu"]["device_count"] == 1
    assert report["distributions"]["deepseek-core"]
    plugins = {p["name"]: p for p in report["plugins"]}
    assert plugins["core"]["status"] == "loaded"
    assert "cpu" in plugins["core"]["registered"]["backend"]
    assert not problems(report, "error"), "this environment should have no errors"
    assert result.returncode == 0, report["problems"]


def test_check_env_module_is_the_same_report() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deepseek.utils.check_env", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert {"python", "torch", "backends", "distributions", "plugins", "problems"} <= set(report)


def test_plugins_lists_cores_builtins() -> None:
    result = deepseek("plugins")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "core  (deepseek-core" in result.stdout
    for kind, name in [
        ("backends", "cpu"),
        ("strategies", "single"),
        ("precisions", "fp16-mixed"),
        ("callbacks", "model_checkpoint"),
    ]:
        assert any(line.split()[:2] == [kind, name] for line in result.stdout.splitlines()), name


def test_failed_plugin_is_listed_and_makes_plugins_exit_1(plugin_dists) -> None:
    plugin_dists.add("deepseek-plugin-broken", BROKEN, entry_name="broken")
    result = deepseek("plugins", env=plugin_dists.env())
    assert result.returncode == 1
    assert "broken  (deepseek-plugin-broken 1.0.0)  failed" in result.stdout
    assert "needs libfoo >= 2" in result.stdout
    # Reported once (the listing is the report; no second copy as a warning), no traceback.
    assert (result.stdout + result.stderr).count("needs libfoo >= 2") == 1
    assert "Traceback" not in result.stderr

    env = deepseek("env", "--json", env=plugin_dists.env())
    assert env.returncode == 1
    [error] = [p for p in problems(json.loads(env.stdout), "error") if "'broken'" in p["message"]]
    assert "DEEPSEEK_DISABLED_PLUGINS=broken" in error["fix"]


def test_plugin_adds_a_subcommand_and_an_env_report(plugin_dists) -> None:
    plugin_dists.add("deepseek-plugin-hello", CLI_PLUGIN, entry_name="hello")
    result = deepseek("hello", "world", env=plugin_dists.env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello world from a plugin"
    env = deepseek("env", env=plugin_dists.env())
    assert "hello-plugin: 3 greetings configured" in env.stdout


# -- in this process -----------------------------------------------------------------------


@pytest.mark.skipif(ON_CUDA_BUILD, reason="this torch build has CUDA")
def test_env_requesting_cuda_on_a_cpu_build_fails(fresh_plugins, capsys) -> None:
    status, out, _ = run_cli(capsys, "env", "--json", "--backend", "cuda")
    assert status == 1
    errors = problems(json.loads(out), "error")
    assert any("'cuda' is not available" in p["message"] for p in errors), errors


def test_too_many_omp_threads_is_a_warning_with_the_fix(fresh_plugins, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "999")
    status, out, _ = run_cli(capsys, "env")
    assert status == 0
    assert "[warning] OMP_NUM_THREADS=999 exceeds the" in out
    assert "fix: export OMP_NUM_THREADS=" in out

    status, out, _ = run_cli(capsys, "env", "--json")
    report = json.loads(out)
    [warning] = [p for p in problems(report, "warning") if "OMP_NUM_THREADS" in p["message"]]
    assert warning["fix"].startswith(f"export OMP_NUM_THREADS={report['physical_cores']}")


def test_plugins_json(fresh_plugins, capsys) -> None:
    status, out, _ = run_cli(capsys, "plugins", "--json")
    assert status == 0
    core = next(p for p in json.loads(out) if p["name"] == "core")
    assert core["distribution"] == "deepseek-core" and core["status"] == "loaded"
    assert "single" in core["registered"]["strategy"]


def test_disabled_plugin_is_listed_and_its_command_is_gone(
    plugin_dists, capsys, monkeypatch, rediscover
) -> None:
    plugin_dists.add("deepseek-plugin-hello", CLI_PLUGIN, entry_name="hello")
    status, out, _ = run_cli(capsys, "hello", "x", "--status", "3")
    assert (status, out) == (3, "hello x from a plugin\n")
    assert "hello" in run_cli(capsys, "--help")[1]

    monkeypatch.setenv("DEEPSEEK_DISABLED_PLUGINS", "hello")
    rediscover()
    status, _, err = run_cli(capsys, "hello", "x")
    assert status == 2 and "unknown command 'hello'" in err
    # Not argparse's "invalid choice": the plugin that would provide it, and why not.
    assert "plugin 'hello' (deepseek-plugin-hello) was disabled" in err
    assert "DEEPSEEK_DISABLED_PLUGINS" in err
    status, out, _ = run_cli(capsys, "plugins")
    assert status == 0
    assert "hello  (deepseek-plugin-hello 1.0.0)  disabled" in out


def test_plugin_cannot_take_over_a_core_command(plugin_dists, capsys) -> None:
    plugin_dists.add("deepseek-plugin-clash", CLASHING, entry_name="clash")
    status, out, err = run_cli(capsys, "env", "--json")
    assert status == 1, err  # a plugin problem is reported as an error ...
    report = json.loads(out)
    assert report["torch"] == torch.__version__  # ... and core's env command still ran
    messages = [p["message"] for p in problems(report, "error")]
    assert any("'clash'" in m and "'env'" in m for m in messages), messages  # blames the plugin
    assert not any("'core'" in m for m in messages), messages
    status, out, _ = run_cli(capsys, "plugins")
    assert status == 1 and "adds the command 'env', which is core's" in out


def test_no_command_prints_help_and_exits_2(fresh_plugins, capsys) -> None:
    status, out, _ = run_cli(capsys)
    assert status == 2
    assert "env" in out and "plugins" in out


def test_version(fresh_plugins, capsys) -> None:
    import deepseek as ds

    status, out, _ = run_cli(capsys, "--version")
    assert status == 0
    assert out.strip() == f"deepseek {ds.__version__}"
