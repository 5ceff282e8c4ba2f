"""The ``deepseek`` command line. Subcommands come from plugins' ``deepseek_cli`` hook,
core's own (``env``, ``plugins``, ``train``, ``profile``, ``new-plugin``) included.

Plugin problems never end in a raw traceback here: a plugin error (a strict-mode load
failure, two plugins registering one name) is printed as one line and the exit status is
1, whichever subcommand ran into it.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

from deepseek import __version__
from deepseek._first_party import CORE

PROTECTED = frozenset({"env", "plugins"})  # core's diagnostics: never replaced


@dataclass
class CommandTable:
    """Who added which subcommand, as resolved from every plugin's ``deepseek_cli``."""

    owners: dict[str, str] = field(default_factory=dict)  # command -> plugin name
    reports_problems: set[str] = field(default_factory=set)  # commands that list them
    conflicts: dict[str, list[str]] = field(default_factory=dict)  # command -> plugins

    def conflict_message(self, command: str) -> str:
        plugins = self.conflicts[command]
        from deepseek.plugins.manager import get_plugin_manager

        manager = get_plugin_manager()
        who = " and by ".join(
            f"plugin {p!r} ({manager.record_for(p).distribution})" for p in plugins
        )
        return (
            f"command {command!r} is added twice: by {who}. Uninstall one, block one with "
            "DEEPSEEK_DISABLED_PLUGINS, or mark the intended replacement with "
            "add_command(..., override=True)."
        )


def collect_commands() -> tuple[list[Any], CommandTable]:
    """Call every plugin's ``deepseek_cli`` through pluggy (one plugin at a time, in
    pluggy's order) and resolve overrides and conflicts. Credits each command to its
    plugin's record (``deepseek plugins`` lists them)."""
    from deepseek.plugins.commands import CommandParser
    from deepseek.plugins.manager import Registration, get_plugin_manager

    manager = get_plugin_manager()
    for record in manager.records.values():
        record.commands = []
        record.entries = [e for e in record.entries if e.kind != "command"]
        record.problems = [p for p in record.problems if not p.startswith("command ")]
    definitions = []
    for record, call in manager.call_each("deepseek_cli"):
        commands = CommandParser()
        commands._plugin = record.name
        try:
            call(parser=commands, subparsers=commands)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the CLI
            manager.report(record, f"failed to add its commands: {type(exc).__name__}: {exc}")
            continue
        definitions.extend(commands.definitions)

    by_name: dict[str, list[Any]] = {}
    for definition in definitions:
        by_name.setdefault(definition.name, []).append(definition)
    chosen, table = [], CommandTable()
    # Registration order (core first) for the help listing and for messages.
    order = [name for name, _ in manager.list_name_plugin()]

    def position(d: Any) -> int:
        return order.index(d.plugin) if d.plugin in order else len(order)

    for name, claims in sorted(by_name.items(), key=lambda kv: min(map(position, kv[1]))):
        claims = sorted(claims, key=position)
        if name in PROTECTED and any(d.plugin == CORE.plugin for d in claims):
            # The diagnostics must work whatever is installed: keep core's, blame the rest.
            for d in claims:
                if d.plugin != CORE.plugin:
                    manager.report(
                        manager.record_for(d.plugin),
                        f"adds the command {name!r}, which is core's and cannot be replaced "
                        "(it is how plugin problems are diagnosed); rename the command",
                    )
            claims = [d for d in claims if d.plugin == CORE.plugin]
        overrides = [d for d in claims if d.override]
        plugins = list(dict.fromkeys(d.plugin for d in claims))
        if len(claims) == 1 or len(overrides) == 1:
            winner = overrides[0] if overrides else claims[0]
            chosen.append(winner)
            table.owners[name] = winner.plugin
            record = manager.record_for(winner.plugin)
            record.commands.append(name)
            others = [p for p in plugins if p != winner.plugin]
            state = "overrides" if others else "active"
            record.entries.append(
                Registration("command", name, winner.help, state, _who(manager, others))
            )
            for loser in claims:
                if loser is not winner:
                    manager.record_for(loser.plugin).entries.append(
                        Registration(
                            "command",
                            name,
                            loser.help,
                            "overridden",
                            _who(manager, [winner.plugin]),
                        )
                    )
            continue
        table.conflicts[name] = plugins
        message = table.conflict_message(name)
        for d in claims:
            record = manager.record_for(d.plugin)
            record.entries.append(
                Registration(
                    "command",
                    name,
                    d.help,
                    "conflict",
                    _who(manager, [p for p in plugins if p != d.plugin]),
                )
            )
            if message not in record.problems:
                record.problems.append(message)
    return chosen, table


def _who(manager: Any, plugins: list[str]) -> str | None:
    names = [f"{p!r} ({manager.record_for(p).distribution})" for p in plugins]
    return ", ".join(names) or None


def build_parser() -> argparse.ArgumentParser:
    parser, _ = _build()
    return parser


def _build() -> tuple[argparse.ArgumentParser, CommandTable]:
    parser = argparse.ArgumentParser(
        prog="deepseek", description="DeepSeek: train, inspect and extend deep-learning jobs."
    )
    parser.add_argument("--version", action="version", version=f"deepseek {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen, table = collect_commands()
    for definition in chosen:
        if definition.parser.get_default("reports_plugin_problems"):
            table.reports_problems.add(definition.name)
        subparsers.add_parser(
            definition.name,
            help=definition.help,
            parents=[definition.parser],
            **definition.kwargs,
        )
    for name in table.conflicts:
        clash = subparsers.add_parser(name, help="(in conflict: see deepseek plugins)")
        clash.add_argument("rest", nargs=argparse.REMAINDER)
        clash.set_defaults(func=_conflicting(table.conflict_message(name)))
    return parser, table


def _conflicting(message: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        from deepseek.plugins.manager import PluginConflictError

        raise PluginConflictError(message)

    return run


def _command_word(argv: list[str]) -> str | None:
    for token in argv:
        if token == "--":
            return None
        if not token.startswith("-"):
            return token
    return None


def _unknown_command(command: str, known: list[str]) -> str:
    """Why ``deepseek <command>`` does not exist here: a plugin that did not load may
    provide it (it was disabled, failed, or misspelled deepseek_cli)."""
    from deepseek.plugins.manager import get_plugin_manager

    lines = [f"deepseek: error: unknown command {command!r}."]
    not_loaded = get_plugin_manager().not_loaded()
    cli_typos = [
        r
        for r in not_loaded
        if r.status == "partial"
        and any(difflib.get_close_matches(h, ["deepseek_cli"], n=1) for h in r.unknown_hooks)
    ]
    others = [r for r in not_loaded if r.status in ("failed", "disabled")]
    likely = [r for r in others if r.name.lower() in command.lower()] or others
    for r in cli_typos:
        lines.append(
            f"  plugin {r.name!r} ({r.distribution}) implements "
            f"{r.unknown_hooks[0]!r} instead of 'deepseek_cli', so its commands are missing"
        )
    for r in likely:
        state = "was disabled" if r.status == "disabled" else "failed to load"
        lines.append(
            f"  plugin {r.name!r} ({r.distribution}) {state} and may provide it: {r.error}"
        )
    close = difflib.get_close_matches(command, known, n=1)
    if close:
        lines.append(f"  did you mean {close[0]!r}?")
    lines.append(f"  commands: {', '.join(known)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from deepseek.plugins.manager import DeepSeekPluginWarning, PluginError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Discovery warnings are held back: commands that report plugin problems
        # themselves (env, plugins) show them once, the others print them once here.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeepSeekPluginWarning)
            parser, table = _build()
        command = _command_word(argv)
        known = list(table.owners) + list(table.conflicts)
        if command is not None and command not in known:
            print(_unknown_command(command, known), file=sys.stderr)
            return 2
        if command not in table.reports_problems:
            for w in caught:  # once each, through the filters as if never held back
                module = w.filename.rpartition("/")[2].removesuffix(".py")
                warnings.warn_explicit(
                    w.message, w.category, w.filename, w.lineno, module=module, registry={}
                )
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except PluginError as exc:
        name = f"deepseek {command}" if (command := _command_word(argv)) else "deepseek"
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
