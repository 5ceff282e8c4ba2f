"""YAML job configs: load, override with ``key=value``, validate, print.

>>> from deepseek.config import parse_config
>>> cfg = parse_config({"model": {"name": "m:f"}, "data": {"train": "d:f"}},
...                    overrides=["trainer.max_epochs=3"])
>>> cfg.trainer.max_epochs
3
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from deepseek.config.schema import (
    Component,
    Config,
    ConfigError,
    DataConfig,
    SchedulerConfig,
    TrainerConfig,
    from_dict,
)

__all__ = [
    "Component",
    "Config",
    "ConfigError",
    "DataConfig",
    "SchedulerConfig",
    "TrainerConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
    "parse_config",
]


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML file (``yaml.safe_load``), apply ``key=value`` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = _safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    return parse_config(data, overrides)


def parse_config(data: Any, overrides: Iterable[str] = ()) -> Config:
    data = apply_overrides(data, overrides)
    return from_dict(Config, data)


def apply_overrides(data: Any, overrides: Iterable[str]) -> dict[str, Any]:
    """``["trainer.max_epochs=3", "optimizer.lr=0.01"]`` applied to a nested dict; each
    value is parsed as YAML (``3`` is an int, ``null`` is None, ``[a, b]`` a list)."""
    if not isinstance(data, dict):
        raise ConfigError(f"<root>: expected a mapping, got {type(data).__name__}")
    data = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. trainer.max_epochs=3")
        try:
            value = _safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {item!r}: {where} is {child!r}, not a mapping")
            node = child
        node[parts[-1]] = value
    return data


# YAML 1.1 (PyYAML) reads 1e-3 as a string because it lacks a dot; YAML 1.2 and every
# user read it as a float.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _safe_load(text: str) -> Any:
    return _fix_floats(yaml.safe_load(text))


def _fix_floats(value: Any) -> Any:
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value):
        return float(value)
    if isinstance(value, dict):
        return {k: _fix_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fix_floats(v) for v in value]
    return value


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
