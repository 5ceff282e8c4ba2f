"""The job config: YAML mapped onto typed dataclasses.

Every error names the key path (``trainer.max_epochs``), the bad value and what is
allowed. Components (model, data, optimizer, scheduler, callbacks, loss) are written as
``{name: ..., <keyword arguments>}``; ``name`` is a registry name (``resnet18``,
``model_checkpoint``), a torch name (``AdamW``, ``cross_entropy``) or ``module:callable``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type."""


@dataclass
class Component:
    """``{name: X, key: value, ...}``: what to build and its keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}


@dataclass
class DataConfig:
    train: Component
    val: Component | None = None
    batch_size: int = 32
    num_workers: int = 0
    shuffle: bool = True


@dataclass
class SchedulerConfig:
    name: str
    interval: str = "step"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "interval": self.interval, **self.kwargs}


@dataclass
class TrainerConfig:
    max_epochs: int | None = None
    max_steps: int | None = None
    backend: str = "auto"
    strategy: str = "single"
    precision: str = "auto"
    accumulate_grad_batches: int = 1
    gradient_clip_norm: float | None = None
    val_every_n_epochs: int | None = 1
    val_every_n_steps: int | None = None
    deterministic: bool = False
    compile: bool = False
    gradient_checkpointing: bool | int | str = False
    loss: str | None = None
    metrics: list[str] = field(default_factory=list)
    on_nan_loss: str | None = "raise"
    enable_progress_bar: bool = True
    resume: str | None = None


@dataclass
class Config:
    model: Component
    data: DataConfig
    optimizer: Component = field(default_factory=lambda: Component("AdamW", {"lr": 1e-3}))
    scheduler: SchedulerConfig | None = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    callbacks: list[Component] = field(default_factory=list)
    seed: int | None = None
    output_dir: str = "runs/default"
    plot: bool = True
    distributed: dict[str, Any] = field(default_factory=dict)  # read by deepseek-dist

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


# -- YAML value -> dataclass ---------------------------------------------------------------


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from plain YAML data, checking keys and types."""
    where = path or "<root>"
    if cls in (Component, SchedulerConfig):
        return _component(cls, data, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{_join(path, key)}: unknown key.{hint} Allowed keys: {', '.join(fields)}"
        )
    values = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name not in data:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required:
                raise ConfigError(f"{key_path}: required key is missing")
            continue
        values[name] = _convert(hints[name], data[name], key_path)
    return cls(**values)


def _component(cls: type, data: Any, path: str) -> Any:
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ConfigError(
            f"{path}: expected a name or a mapping with a 'name' key "
            f"(e.g. {{name: AdamW, lr: 0.001}}), got {_describe(data)}"
        )
    data = dict(data)
    name = data.pop("name")
    if cls is SchedulerConfig:
        interval = data.pop("interval", "step")
        if interval not in ("step", "epoch"):
            raise ConfigError(
                f"{path}.interval: {interval!r} is not allowed; use 'step' or 'epoch'"
            )
        return SchedulerConfig(name, interval, data)
    return Component(name, data)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own error names the problem best
            return _convert(real[0], value, path)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path)
            except ConfigError as exc:
                errors.append(exc)
        allowed = " or ".join(_type_name(o) for o in options)
        raise ConfigError(f"{path}: {_describe(value)} is not allowed; expected {allowed}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{path}: {_describe(value)} is not allowed; expected {hint.__name__}")
    return value


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _to_plain(value: Any) -> Any:
    if isinstance(value, (Component, SchedulerConfig)):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value
