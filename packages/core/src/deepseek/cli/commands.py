"""Core's inspection subcommands: ``env`` and ``plugins`` (jobs live in ``cli/jobs.py``)."""

from __future__ import annotations

import argparse
import json

from deepseek.utils import check_env


def add_core_commands(subparsers: argparse._SubParsersAction) -> None:
    env = subparsers.add_parser("env", help="report the environment and its problems")
    check_env.add_arguments(env)
    env.set_defaults(func=check_env.run)

    plugins = subparsers.add_parser("plugins", help="list plugins and what they registered")
    plugins.add_argument("--json", action="store_true", help="print as JSON")
    plugins.set_defaults(func=run_plugins)
    from deepseek.cli.jobs import add_job_commands

    add_job_commands(subparsers)


def run_plugins(args: argparse.Namespace) -> int:
    from deepseek.plugins import plugins, registry
    from deepseek.plugins.registry import PLURAL

    records = plugins()
    failed = [r for r in records if r.status == "failed"]
    if args.json:
        print(json.dumps([r.__dict__ for r in records], indent=2, default=str))
        return 1 if failed else 0
    for rec in records:
        print(f"{rec.name}  ({rec.distribution} {rec.version})  {rec.status}")
        if rec.error:
            print(f"    ! {rec.error}")
        for kind, names in rec.registered.items():
            reg = registry(kind)
            for name in names:
                description = reg.get(name).description if name in reg else ""
                print(f"    {PLURAL[kind]:<11} {name:<20} {description}")
    return 1 if failed else 0
