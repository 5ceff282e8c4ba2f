"""``ds.utils``: data utilities (``ds.utils.data``) and ``check_env``."""

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("data", "check_env"):
        return importlib.import_module(f"deepseek.utils.{name}")
    raise AttributeError(f"module 'deepseek.utils' has no attribute {name!r}")
