"""YAML job configs: load, override with ``key=value``, validate, print.

A job config is code, like a Python script. Its ``module:callable`` targets (``model:
{name: "mymodels:Net"}``) are imported and called: a config from someone else can run
anything a script can (``os:system``). Read a config before running it, or load it with
``safe=True`` (``deepseek train --safe``), which allows only registry names and targets
in ``torch``, ``deepseek`` and the config's own folder. Modules are imported from the
config's folder by file location, then from the working directory, then from the
installed packages; the folder never shadows an installed module. See
:mod:`deepseek.config.targets`.

Loading is bounded: YAML aliases may expand to at most
:data:`~deepseek.config.yaml_io.MAX_EXPANDED_NODES` values (an alias bomb is rejected
before anything is copied), unquoted ``1e-3`` is a float (YAML 1.2) while a quoted
``"1e5"`` stays a string.

>>> from deepseek.config import parse_config
>>> cfg = parse_config({"model": {"name": "m:f"}, "data": {"train": "d:f"}},
...                    overrides=["trainer.max_epochs=3",
...                               "trainer.precision={name: fp16-mixed, loss_scale: 128}"])
>>> cfg.trainer.max_epochs
3
>>> cfg.trainer.precision
Component(name='fp16-mixed', kwargs={'loss_scale': 128})
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from deepseek.config.errors import ConfigError
from deepseek.config.schema import (
    AlgorithmConfig,
    Component,
    Config,
    DataConfig,
    SchedulerConfig,
    Section,
    from_dict,
    register_section,
    unregister_section,
)
from deepseek.config.targets import check_safe, import_target, is_target
from deepseek.config.yaml_io import MAX_EXPANDED_NODES, check_size, loads, read_text

__all__ = [
    "MAX_EXPANDED_NODES",
    "AlgorithmConfig",
    "Component",
    "Config",
    "ConfigError",
    "DataConfig",
    "SchedulerConfig",
    "Section",
    "TrainerConfig",
    "apply_overrides",
    "dump_config",
    "import_target",
    "load_config",
    "parse_config",
    "register_section",
    "targets_of",
    "unregister_section",
]


def __getattr__(name: str) -> Any:
    if name == "TrainerConfig":  # derived from the Trainer's signature on first use
        from deepseek.config.trainer_options import trainer_config_class

        return trainer_config_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_config(
    path: str | os.PathLike, overrides: Iterable[str] = (), *, safe: bool = False
) -> Config:
    """Read a YAML job config (``yaml.safe_load`` rules), apply ``key=value`` overrides,
    validate. ``safe=True`` refuses ``module:callable`` targets outside ``torch``,
    ``deepseek`` and the config's own folder (see the module docstring).

    The returned config remembers its folder (``config.source_dir``), where its own
    modules are looked up first, and whether it was loaded safely (``config.safe``).
    """
    path = Path(path)
    data = loads(read_text(path), where=str(path))
    if data is None:
        raise ConfigError(f"{path}: the file is empty; see examples/quickstart.yaml")
    return parse_config(data, overrides, safe=safe, source_dir=path.resolve().parent)


def parse_config(
    data: Any,
    overrides: Iterable[str] = (),
    *,
    safe: bool = False,
    source_dir: str | os.PathLike | None = None,
) -> Config:
    """Validate plain data (as YAML loads it) into a :class:`Config`."""
    check_size(data, "<config>")
    data = apply_overrides(data, overrides)
    config = from_dict(Config, data)
    config.source_dir = Path(source_dir) if source_dir is not None else None  # type: ignore[attr-defined]
    config.safe = safe  # type: ignore[attr-defined]
    if safe:
        for key_path, target in targets_of(config):
            check_safe(target, key_path, source_dir)
    return config


def targets_of(config: Config) -> list[tuple[str, str]]:
    """Every ``module:callable`` a config names, with its key path."""
    found: list[tuple[str, str]] = []

    def add(path: str, name: Any) -> None:
        if is_target(name):
            found.append((path, name))

    add("model.name", config.model.name)
    add("data.train.name", config.data.train.name)
    if config.data.val is not None:
        add("data.val.name", config.data.val.name)
    add("optimizer.name", config.optimizer.name)
    if config.scheduler is not None:
        add("scheduler.name", config.scheduler.name)
    for i, cb in enumerate(config.callbacks):
        add(f"callbacks[{i}].name", cb.name)
    for i, algo in enumerate(config.algorithms):
        add(f"algorithms[{i}].name", algo.name)
    t = config.trainer
    for key in ("loss", "precision", "strategy"):
        value = getattr(t, key, None)
        if isinstance(value, Component):
            add(f"trainer.{key}.name", value.name)
    for i, metric in enumerate(getattr(t, "metrics", None) or []):
        add(f"trainer.metrics[{i}].name", metric.name)
    return found


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
            value = loads(raw, where=f"--set {item!r}")
        except ConfigError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str):
                # ``precision: fp32`` then ``--set trainer.precision.loss_scale=128``
                child = node[part] = {"name": child}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {item!r}: {where} is {child!r}, not a mapping")
            node = child
        node[parts[-1]] = value
    return data


def dump_config(config: Config) -> str:
    """The resolved config (every default included) as YAML."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
