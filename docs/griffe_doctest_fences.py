"""A griffe extension for the API reference: fence bare ``>>>`` examples.

Docstrings in this project put doctests inline (``pytest --doctest-modules`` runs them),
not only under an ``Examples:`` heading. Markdown would read such a block as prose, and
``[2, 2]`` on an output line as a link, so each run of lines that starts at ``>>>`` is
wrapped in a ``pycon`` code fence before the docstring is rendered.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """Wrap every bare ``>>>`` block (up to the next blank line) in a ``pycon`` code
    fence; blocks already inside a fence are left alone (tested in
    ``integration-tests/test_docs_snippets.py``)."""
    out: list[str] = []
    in_fence = in_block = False
    indent = ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_block and not stripped:
            out.append(f"{indent}```")
            in_block = False
        elif not in_fence and not in_block and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_block = True
        out.append(line)
    if in_block:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
