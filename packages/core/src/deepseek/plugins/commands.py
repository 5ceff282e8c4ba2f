"""``CommandParser``: what a plugin's ``deepseek_cli`` hook adds subcommands to.

A small public object instead of argparse's private ``_SubParsersAction``::

    >>> import argparse
    >>> from deepseek.plugins.commands import CommandParser
    >>> commands = CommandParser()
    >>> hello = commands.add_command("hello", help="say hello", func=lambda args: 0)
    >>> hello.add_argument("--name", default="world")  # doctest: +ELLIPSIS
    _StoreAction(...)
    >>> isinstance(hello, argparse.ArgumentParser), commands.names()
    (True, ['hello'])

``add_command`` returns a plain ``argparse.ArgumentParser`` for the command's own
arguments. The command's function receives the parsed ``argparse.Namespace`` and
returns an exit status (``int``) or ``None`` for 0. ``override=True`` replaces a command
of the same name from another plugin (otherwise two plugins adding one name is a
conflict that ``deepseek plugins`` reports).

Plugins written for the old hook signature ``deepseek_cli(subparsers)`` called
``subparsers.add_parser(name, help=...)``: that still works for one release, with a
``DeprecationWarning``.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CommandFunc = Callable[[argparse.Namespace], "int | None"]


@dataclass
class CommandDefinition:
    """One subcommand as a plugin declared it."""

    name: str
    help: str
    parser: argparse.ArgumentParser
    plugin: str  # the plugin (entry-point) name that added it
    override: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)  # description, epilog, ...


class CommandParser:
    """Collects the subcommands plugins add; the ``deepseek`` CLI builds itself from it."""

    def __init__(self) -> None:
        self.definitions: list[CommandDefinition] = []
        self._plugin = "<runtime>"

    def names(self) -> list[str]:
        """Names of the commands added so far (in the order they were added)."""
        return list(dict.fromkeys(d.name for d in self.definitions))

    def add_command(
        self,
        name: str,
        *,
        help: str = "",
        func: CommandFunc | None = None,
        override: bool = False,
        description: str | None = None,
        **kwargs: Any,
    ) -> argparse.ArgumentParser:
        """Declare ``deepseek <name>``; returns the parser for its arguments.

        ``func`` (or ``parser.set_defaults(func=...)``) is what runs; ``description``
        and other keywords go to ``argparse.ArgumentParser``.
        """
        if not isinstance(name, str) or not name.strip() or " " in name.strip():
            raise ValueError(f"a command name must be one non-empty word, got {name!r}")
        name = name.strip()
        options = dict(kwargs)
        if description is not None:
            options["description"] = description
        elif help:
            options["description"] = help
        # add_help=False: the real subparser is built later with this one as a parent,
        # and brings its own -h.
        parser = argparse.ArgumentParser(prog=f"deepseek {name}", add_help=False, **options)
        if func is not None:
            parser.set_defaults(func=func)
        self.definitions.append(
            CommandDefinition(name, help, parser, self._plugin, override, options)
        )
        return parser

    # -- the pre-0.2 interface (argparse's _SubParsersAction.add_parser) -------------------
    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """Deprecated: ``add_command(name, help=...)``. Kept for one release."""
        warnings.warn(
            f"plugin {self._plugin!r}: deepseek_cli(subparsers).add_parser({name!r}) is "
            "deprecated; implement deepseek_cli(parser) and call "
            "parser.add_command(name, help=..., func=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        help_text = kwargs.pop("help", "")
        kwargs.pop("aliases", None)
        return self.add_command(name, help=help_text or "", **kwargs)
