"""Core's inspection subcommands: ``env``, ``plugins`` and ``new-plugin`` (jobs live in
``cli/jobs.py``)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from deepseek.plugins.commands import CommandParser
from deepseek.utils import check_env


def add_core_commands(parser: CommandParser) -> None:
    env = parser.add_command("env", help="report the environment and its problems")
    check_env.add_arguments(env)
    env.set_defaults(func=check_env.run, reports_plugin_problems=True)

    plugins = parser.add_command(
        "plugins", help="list plugins, what they registered and their problems"
    )
    plugins.add_argument("--json", action="store_true", help="print as JSON")
    plugins.add_argument(
        "--check",
        nargs="?",
        const="",
        default=None,
        metavar="NAME",
        help="check one plugin (or all): exit 1 on an import error, a misspelled hook, "
        "a malformed record or a name clash; for plugin authors' CI",
    )
    plugins.set_defaults(func=run_plugins, reports_plugin_problems=True)

    from deepseek.cli.new_plugin import add_arguments as add_new_plugin_arguments
    from deepseek.cli.new_plugin import run as run_new_plugin

    new = parser.add_command(
        "new-plugin", help="write a new plugin distribution (pyproject, hooks, tests)"
    )
    add_new_plugin_arguments(new)
    new.set_defaults(func=run_new_plugin)

    from deepseek.cli.jobs import add_job_commands

    add_job_commands(parser)


def inspect_plugins() -> list[Any]:
    """Every plugin record with everything checked: each registry built (conflicts
    recorded, not raised) and every plugin's CLI commands collected. Plugin warnings are
    not printed: the records carry them."""
    from deepseek.cli import collect_commands
    from deepseek.plugins import get_plugin_manager
    from deepseek.plugins.registry import HOOK_FOR_KIND, registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manager = get_plugin_manager()
        for kind in HOOK_FOR_KIND:
            registry(kind).build()  # records conflicts on the plugins' records
        collect_commands()
    return list(manager.records.values())


def _plural(kind: str) -> str:
    from deepseek.plugins.registry import PLURAL

    return PLURAL.get(kind, kind + "s")


STATE_NOTE = {
    "active": "",
    "overrides": "  [overrides {other}]",
    "overridden": "  [overridden by {other}]",
    "conflict": "  [CLASH with {other}]",
}


def format_record(record: Any) -> list[str]:
    status = record.status
    if record.problems and status in ("loaded", "runtime"):
        status = f"{status}, with problems"
    lines = [f"{record.name}  ({record.distribution} {record.version})  {status}"]
    if record.error and record.error not in record.problems:
        lines.append(f"    ! {record.error}")
    for problem in record.problems:
        lines.append(f"    ! {problem}")
    for entry in record.entries:
        note = STATE_NOTE[entry.state].format(other=entry.other)
        lines.append(f"    {_plural(entry.kind):<11} {entry.name:<20} {entry.description}{note}")
    return lines


def run_plugins(args: argparse.Namespace) -> int:
    from deepseek.plugins.manager import get_plugin_manager

    records = inspect_plugins()
    manager = get_plugin_manager()
    check = getattr(args, "check", None)
    if check:
        chosen = [r for r in records if r.matches(check)]
        if not chosen:
            known = ", ".join(r.name for r in records)
            print(
                f"deepseek plugins: error: no installed plugin or distribution named "
                f"{check!r} (installed plugins: {known})",
                file=sys.stderr,
            )
            return 1
        records = chosen
    bad = [r for r in records if not r.ok or (check is not None and r.status == "disabled")]
    if args.json:
        print(json.dumps([r.__dict__ for r in records], indent=2, default=_jsonable))
        return 1 if bad else 0
    for problem in manager.environment_problems:  # the user's settings, not a plugin's fault
        print(f"! {problem}")
    for record in records:
        if check is not None and record.ok and record.status != "disabled":
            print(f"{record.name}  ({record.distribution} {record.version})  ok")
            continue
        print("\n".join(format_record(record)))
    if check is not None:
        print(f"{len(records) - len(bad)} plugin(s) ok, {len(bad)} with problems")
    return 1 if bad else 0


def _jsonable(value: Any) -> Any:
    return getattr(value, "__dict__", str(value))
