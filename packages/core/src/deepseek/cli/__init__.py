"""The ``deepseek`` command line. Subcommands come from plugins' ``deepseek_cli`` hook,
core's own (``env``, ``plugins``, ``train``, ``profile``) included."""

from __future__ import annotations

import argparse
import sys

from deepseek import __version__


def build_parser() -> argparse.ArgumentParser:
    from deepseek.plugins.manager import get_plugin_manager

    parser = argparse.ArgumentParser(
        prog="deepseek", description="DeepSeek: train, inspect and extend deep-learning jobs."
    )
    parser.add_argument("--version", action="version", version=f"deepseek {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    manager = get_plugin_manager()
    for impl in manager.hook.deepseek_cli.get_hookimpls():  # registration order: core first
        try:
            impl.function(subparsers=subparsers)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the CLI
            record = manager.record_for(impl.plugin_name)
            manager.report(
                f"plugin {record.name!r} ({record.distribution}) failed to add its "
                f"commands: {type(exc).__name__}: {exc}"
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
