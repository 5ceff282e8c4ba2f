"""Argument checks shared by the Trainer and the callbacks: one wording everywhere."""

from __future__ import annotations

from typing import Any


def is_positive_int(value: Any) -> bool:
    """``True`` for ints >= 1 (``bool`` excluded: ``True`` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_positive_int(name: str, value: Any) -> None:
    """Raise ``ValueError("<name> must be a positive integer, got ...")`` unless valid."""
    if not is_positive_int(value):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
