"""Environment report: ``python -m deepseek.utils.check_env`` (also ``deepseek env``).

Prints Python, torch and CUDA/ROCm versions, devices, installed DeepSeek distributions
and plugins, thread settings, and every problem found with its fix. ``--json`` prints a
machine-readable report. The exit status is 1 when something the user asked for is
broken (a requested backend that is unavailable, a plugin that failed to load, two
plugins in conflict, mismatched DeepSeek versions), else 0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from typing import Any

import torch

from deepseek.plugins.first_party import DISTRIBUTIONS, META_DISTRIBUTION, normalize_distribution
from deepseek.plugins.manager import PluginError, get_plugin_manager


@dataclass
class Problem:
    severity: str  # "error" (exit 1) | "warning" | "info"
    message: str
    fix: str


def physical_cores() -> int:
    """Physical cores (not hyper-threads), from /proc/cpuinfo where it exists."""
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            physical_id = core_id = None
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "physical id":
                    physical_id = value
                elif key == "core id":
                    core_id = value
                elif not key and physical_id is not None and core_id is not None:
                    cores.add((physical_id, core_id))
                    physical_id = core_id = None
            if physical_id is not None and core_id is not None:
                cores.add((physical_id, core_id))
    except OSError:
        pass
    return len(cores) or os.cpu_count() or 1


def _distributions() -> dict[str, str]:
    found = {}
    for dist in importlib.metadata.distributions():
        name = normalize_distribution(dist.metadata["Name"] or "")
        if name in DISTRIBUTIONS or name == META_DISTRIBUTION:
            found[name] = dist.version
    return dict(sorted(found.items()))


def collect(requested_backend: str | None = None) -> dict[str, Any]:
    """Gather the report as a dict (what ``--json`` prints)."""
    from deepseek import backends
    from deepseek.cli.commands import inspect_plugins

    problems: list[Problem] = []
    records = inspect_plugins()  # every registry and command built; warnings recorded
    manager = get_plugin_manager()
    for message in manager.environment_problems:
        problems.append(Problem("warning", message, "fix the variable's plugin names"))

    backend_info = []
    try:
        for name in backends.names():
            try:
                backend_info.append(backends._instance(name).describe())
            except Exception as exc:  # noqa: BLE001 - one broken backend must not hide others
                backend_info.append({"name": name, "available": False, "reason": str(exc)})
                problems.append(
                    Problem("error", f"backend {name!r} failed: {exc}", "reinstall its plugin")
                )
        auto = backends.get("auto").name
    except (PluginError, RuntimeError) as exc:
        problems.append(Problem("error", str(exc), "see the message"))
        auto = None

    for rec in records:
        fix = (
            f"reinstall or upgrade {rec.distribution}, or disable it with "
            f"DEEPSEEK_DISABLED_PLUGINS={rec.name}"
        )
        if rec.status == "failed":
            problems.append(
                Problem("error", f"plugin {rec.name!r} ({rec.distribution}) {rec.error}", fix)
            )
        for message in rec.problems:
            if rec.status == "failed" and message == rec.error:
                continue  # reported just above
            if "registered twice" in message or "added twice" in message:
                if any(p.message == message for p in problems):
                    continue  # a clash is one problem, not one per side
                problems.append(Problem("error", message, "see the message"))
            elif rec.unknown_hooks and "not a deepseek hook" in message:
                problems.append(
                    Problem(
                        "error" if rec.status == "partial" else "warning",
                        f"plugin {rec.name!r} ({rec.distribution}) {message}",
                        "rename the hook to one of deepseek.plugins.hookspecs.HOOK_NAMES",
                    )
                )
            else:
                problems.append(
                    Problem("error", f"plugin {rec.name!r} ({rec.distribution}) {message}", fix)
                )

    dists = _distributions()
    minors = {".".join(v.split(".")[:2]) for v in dists.values()}
    if len(minors) > 1:
        listing = ", ".join(f"{k}=={v}" for k, v in dists.items())
        problems.append(
            Problem(
                "error",
                f"DeepSeek distributions come from different releases: {listing}",
                "upgrade them together: pip install -U " + " ".join(dists),
            )
        )

    cores = physical_cores()
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp is not None:
        try:
            if int(omp) > cores:
                problems.append(
                    Problem(
                        "warning",
                        f"OMP_NUM_THREADS={omp} exceeds the {cores} physical cores: "
                        "threads fight over cores",
                        f"export OMP_NUM_THREADS={cores} (divide by processes per node)",
                    )
                )
        except ValueError:
            problems.append(
                Problem(
                    "warning", f"OMP_NUM_THREADS={omp!r} is not a number", "set it to an integer"
                )
            )

    for info in backend_info:
        env_name = "HIP_VISIBLE_DEVICES" if info["name"] == "rocm" else "CUDA_VISIBLE_DEVICES"
        if info["name"] in ("cuda", "rocm") and os.environ.get(env_name) and not info["available"]:
            problems.append(
                Problem(
                    "warning",
                    f"{env_name} is set but {info['name']} is not available: {info.get('reason')}",
                    f"unset {env_name} or install a {info['name']} build of torch",
                )
            )
        if info["name"] == "cpu" and "bfloat16" not in info.get("native_autocast_dtypes", []):
            problems.append(
                Problem(
                    "info",
                    "this CPU has no native bf16: bf16 runs emulated and very slowly",
                    "use precision='fp32' on this CPU (precision='auto' already does)",
                )
            )

    if requested_backend:
        try:
            backends.get(requested_backend)
        except (RuntimeError, LookupError) as exc:
            problems.append(
                Problem("error", str(exc), "install the right torch build or pick another")
            )

    extra: list[str] = []
    for record, call in manager.call_each("deepseek_env_report"):
        try:
            extra.extend(str(line) for line in (call() or []))
        except Exception as exc:  # noqa: BLE001
            problems.append(
                Problem(
                    "warning",
                    f"plugin {record.name!r} ({record.distribution}) failed in "
                    f"deepseek_env_report: {type(exc).__name__}: {exc}",
                    "report it to the plugin's authors",
                )
            )

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "rocm_build": getattr(torch.version, "hip", None),
        "physical_cores": cores,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "env": {
            name: os.environ.get(name)
            for name in (
                "OMP_NUM_THREADS",
                "CUDA_VISIBLE_DEVICES",
                "HIP_VISIBLE_DEVICES",
                "DEEPSEEK_STRICT_PLUGINS",
                "DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD",
                "DEEPSEEK_PLUGINS",
                "DEEPSEEK_DISABLED_PLUGINS",
            )
        },
        "auto_backend": auto,
        "backends": backend_info,
        "distributions": dists,
        "plugins": [
            {
                "name": r.name,
                "distribution": r.distribution,
                "version": r.version,
                "status": r.status,
                "error": r.error,
                "registered": r.registered,
                "commands": r.commands,
                "problems": r.problems,
            }
            for r in records
        ],
        "plugin_reports": extra,
        "problems": [asdict(p) for p in problems],
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"Python        {report['python']} ({report['platform']})",
        f"torch         {report['torch']}"
        + (f"  CUDA {report['cuda_build']}" if report["cuda_build"] else "")
        + (f"  ROCm {report['rocm_build']}" if report["rocm_build"] else "")
        + ("" if report["cuda_build"] or report["rocm_build"] else "  (CPU-only build)"),
        f"CPU           {report['physical_cores']} physical / {report['logical_cores']} logical"
        f" cores, torch uses {report['torch_threads']} threads",
    ]
    for name, value in report["env"].items():
        if value is not None or name in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES"):
            lines.append(f"{name:<14}{value if value is not None else '(unset)'}")
    lines.append("")
    lines.append(f"Backends (auto -> {report['auto_backend']})")
    for b in report["backends"]:
        if b.get("available"):
            native = ", ".join(b.get("native_autocast_dtypes", [])) or "none (fp32 only)"
            lines.append(
                f"  {b['name']:<6} available   {b['device_count']} device(s) "
                f"{b.get('devices', [])}  collectives: {b['collective_library']}  "
                f"fast autocast: {native}"
            )
        else:
            lines.append(f"  {b['name']:<6} unavailable ({b.get('reason')})")
    lines.append("")
    lines.append("DeepSeek distributions")
    for name, version in report["distributions"].items():
        lines.append(f"  {name:<20}{version}")
    lines.append("")
    lines.append("Plugins")
    for p in report["plugins"]:
        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in p["registered"].items())
        status = p["status"]
        if p["status"] == "disabled":
            status += f" ({p['error']})"
        elif p["error"] or p.get("problems"):
            status += " (see Problems)"  # each problem is printed once, below
        lines.append(f"  {p['name']:<12}{p['distribution']} {p['version']:<8} {status}  {what}")
    if report["plugin_reports"]:
        lines.append("")
        lines.extend(report["plugin_reports"])
    lines.append("")
    if report["problems"]:
        lines.append("Problems")
        for p in report["problems"]:
            lines.append(f"  [{p['severity']}] {p['message']}")
            lines.append(f"      fix: {p['fix']}")
    else:
        lines.append("No problems found.")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--backend",
        default=None,
        help="fail (exit 1) unless this backend is available, e.g. --backend cuda",
    )


def run(args: argparse.Namespace) -> int:
    report = collect(args.backend)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    return 1 if any(p["severity"] == "error" for p in report["problems"]) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepseek.utils.check_env", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except PluginError as exc:  # strict mode: one line, not a traceback
        print(f"check_env: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
