"""mkdocs build hooks: pages generated from the code, so they cannot drift from it.

``<!-- generated: config-reference -->`` in a page is replaced by the tables of every
config section, read from the config dataclasses (``deepseek.config.schema``) and the
``TrainerConfig`` that ``deepseek.config.trainer_options`` derives from the Trainer's
signature. ``<!-- generated: hooks -->`` becomes the list of plugin hooks from
``deepseek.plugins.hookspecs``.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any


def _see_deepseek_as_namespace() -> None:
    """Let griffe (mkdocstrings' loader) merge ``deepseek`` across every distribution's
    ``src/``. Core's ``__init__`` extends ``__path__`` with ``pkgutil.extend_path``, but
    griffe only recognises the ``__import__("pkgutil").extend_path`` spelling, so without
    this it would stop at core's folder and miss ``deepseek.distributed``, ``.nlp``, ...
    """
    import re

    from griffe._internal import finder

    pattern = re.compile(r"pkgutil\.extend_path\(__path__, __name__\)")
    original = finder._is_pkg_style_namespace

    def is_namespace(init_module: Any) -> bool:
        return original(init_module) or bool(pattern.search(init_module.read_text("utf-8-sig")))

    finder._is_pkg_style_namespace = is_namespace


CONFIG_MARKER = "<!-- generated: config-reference -->"
HOOKS_MARKER = "<!-- generated: hooks -->"
BENCHMARKS_MARKER = "<!-- generated: benchmarks -->"
ROOT = Path(__file__).resolve().parent.parent


def _type_name(hint: Any) -> str:
    if hint is Any:
        return "any"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    text = str(hint).replace("typing.", "").replace("deepseek.config.schema.", "")
    return text.replace("NoneType", "None")


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "**required**"
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        value = to_dict()
    if type(value).__name__ == "Section" or dataclasses.is_dataclass(value):
        return "(its own table below)"
    return f"`{value!r}`".replace("|", "\\|")


def _table(cls: type, prefix: str, doc: str = "") -> str:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a derived dataclass: its fields carry real types
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
    lines = [f"### `{prefix}`", ""]
    if doc:
        lines += [doc, ""]
    lines += ["| key | type | default |", "|---|---|---|"]
    for field in dataclasses.fields(cls):
        if field.name in ("sections", "kwargs"):
            continue
        hint = hints.get(field.name, field.type)
        type_text = _type_name(hint).replace("|", "\\|")
        lines.append(f"| `{field.name}` | `{type_text}` | {_default(field)} |")
    return "\n".join(lines) + "\n"


def config_reference() -> str:
    """Markdown tables for every section of a job config, generated from the code."""
    from deepseek.config.schema import (
        SET_ELSEWHERE,
        AlgorithmConfig,
        Config,
        DataConfig,
        SchedulerConfig,
    )
    from deepseek.config.trainer_options import trainer_config_class

    parts = [
        _table(
            Config,
            "top level",
            "Every key of a job file; `model`, `optimizer` and "
            "each entry of `callbacks` are `{name: X, <options>}`.",
        ),
        _table(DataConfig, "data", "`train` / `val` are `{name: module:callable, <options>}`."),
        _table(
            SchedulerConfig,
            "scheduler",
            "`{name: StepLR, interval: step|epoch, "
            "<scheduler options>}`; other keys are the scheduler's options.",
        ),
        _table(
            AlgorithmConfig,
            "algorithms[]",
            "Each entry names a `deepseek_algorithms` registry record; other keys are its options.",
        ),
        _table(
            trainer_config_class(),
            "trainer",
            "Derived from `Trainer.__init__` and "
            "`Trainer.fit` (a new Trainer argument appears here with no other edit).",
        ),
    ]
    moved = [
        "### Trainer arguments set in another section",
        "",
        "| Trainer argument | set it as |",
        "|---|---|",
    ]
    moved += [f"| `{k}` | `{v}` |" for k, v in SET_ELSEWHERE.items()]
    parts.append("\n".join(moved) + "\n")
    try:
        from deepseek.config.schema import section_schema

        schema = section_schema("distributed")
    except Exception:  # noqa: BLE001 - deepseek-dist absent: no section to document
        schema = None
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        parts.append(_table(schema, "distributed", "Declared by deepseek-dist."))
    return "\n".join(parts)


def hooks_reference() -> str:
    """A table of every plugin hook and the first line of its documentation."""
    from deepseek.plugins import hookspecs

    lines = ["| hook | what it provides |", "|---|---|"]
    for name in hookspecs.HOOK_NAMES:
        fn = getattr(hookspecs, name)
        doc = inspect.getdoc(fn) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        args = ", ".join(inspect.signature(fn).parameters)
        lines.append(f"| `{name}({args})` | {first.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"


def benchmarks_reference(root: Path = ROOT) -> str:
    """A table of every ``benchmarks/bench_*.py``: its question (the docstring's first
    sentence) and the command that reproduces its table."""
    import ast

    lines = ["| script | question | reproduce |", "|---|---|---|"]
    for script in sorted((root / "benchmarks").glob("bench_*.py")):
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        first = " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")
        command = f"python benchmarks/{script.name} --quick"
        lines.append(f"| `{script.stem}` | {first} | `{command}` |")
    return "\n".join(lines) + "\n"


def on_config(config: Any, **kwargs: Any) -> Any:
    _see_deepseek_as_namespace()
    return config


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    if HOOKS_MARKER in markdown:
        markdown = markdown.replace(HOOKS_MARKER, hooks_reference())
    if BENCHMARKS_MARKER in markdown:
        markdown = markdown.replace(BENCHMARKS_MARKER, benchmarks_reference())
    return markdown
