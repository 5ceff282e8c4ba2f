"""The job config: YAML mapped onto typed dataclasses.

Every error names the key path (``trainer.max_epochs``), the bad value and what is
allowed. Components (model, data, optimizer, scheduler, callbacks, loss, metrics,
precision, strategy, algorithms) are written as a name or ``{name: ..., <options>}``;
``name`` is a registry name (``resnet18``, ``model_checkpoint``), a torch name (``AdamW``,
``cross_entropy``) or ``module:callable``.

Nothing here repeats another component's options: the ``trainer`` section is derived
from ``Trainer.__init__``'s own signature (see :mod:`deepseek.config.trainer_options`),
component options are checked against the signature of the class or function they
build, and packages add whole sections (``distributed``) with :func:`register_section`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import importlib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from deepseek.config.errors import ConfigError

__all__ = [
    "AlgorithmConfig",
    "Component",
    "Config",
    "ConfigError",
    "DataConfig",
    "SchedulerConfig",
    "Section",
    "from_dict",
    "register_section",
]


@dataclass
class Component:
    """``{name: X, key: value, ...}``: what to build and its keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):  # ``trainer.precision == "fp32"`` (it used to be a str)
            return not self.kwargs and self.name == other
        if isinstance(other, Component):
            return (self.name, self.kwargs) == (other.name, other.kwargs)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


@dataclass
class DataConfig:
    train: Component
    val: Component | None = None
    batch_size: int = 32
    num_workers: int = 0
    shuffle: bool = True


@dataclass
class SchedulerConfig:
    """``{name: StepLR, interval: step|epoch, <scheduler options>}``."""

    name: str
    interval: str = "step"  # one of the Trainer's SCHEDULER_INTERVALS
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "interval": self.interval, **self.kwargs}


@dataclass
class AlgorithmConfig:
    """``{name: qat, at: start|<epoch>, <algorithm options>}``: a ``deepseek_algorithms``
    registry entry applied to the built model before training (``at: start``, the
    default) or at the start of the given epoch (0-based)."""

    name: str
    at: str | int = "start"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "at": self.at, **self.kwargs}


# -- sections that other packages declare ------------------------------------------------

_SECTIONS: dict[str, Any] = {}


def register_section(name: str, schema: type | str) -> None:
    """Declare the schema of a top-level config section owned by another package.

    ``schema`` is a dataclass (or ``"package.module:Class"``, imported on first use)
    whose fields, type hints and defaults are the section's keys; the section is then
    parsed like core's own (key-path errors, ``--set distributed.x=...``,
    ``--print-config``). Call it from the plugin module a ``deepseek`` entry point
    loads. An unregistered ``distributed:`` section is kept as a :class:`Section`.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Tracking:
    ...     project: str = "demo"
    ...     every_n_steps: int = 10
    >>> register_section("tracking", Tracking)
    >>> from deepseek.config import parse_config
    >>> cfg = parse_config({"model": "m:f", "data": {"train": "d:f"},
    ...                     "tracking": {"every_n_steps": 5}})
    >>> cfg.tracking
    Tracking(project='demo', every_n_steps=5)
    >>> unregister_section("tracking")
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a section name must be an identifier, got {name!r}")
    if name in _CORE_KEYS and name != "distributed":
        raise ValueError(f"{name!r} is a core config section and cannot be replaced")
    if not (isinstance(schema, str) or dataclasses.is_dataclass(schema)):
        raise TypeError(f"section {name!r}: schema must be a dataclass or 'module:Class'")
    _SECTIONS[name] = schema


def unregister_section(name: str) -> None:
    _SECTIONS.pop(name, None)


def section_schema(name: str) -> type | None:
    """The dataclass registered for section ``name`` (plugins are discovered first)."""
    if name not in _SECTIONS:
        try:  # plugin modules register their sections when they are loaded
            from deepseek.plugins.manager import get_plugin_manager

            get_plugin_manager()
        except Exception:  # noqa: BLE001 - plugin faults are reported by `deepseek plugins`
            pass
    schema = _SECTIONS.get(name)
    if isinstance(schema, str):
        module_name, _, attr = schema.partition(":")
        schema = getattr(importlib.import_module(module_name), attr)
        _SECTIONS[name] = schema
    return schema


class Section(types.SimpleNamespace):
    """A section no package declared: its keys as attributes (and as a mapping)."""

    def __getitem__(self, key: str) -> Any:
        return self.__dict__[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.__dict__

    def __bool__(self) -> bool:
        return bool(self.__dict__)

    def keys(self) -> Any:
        return self.__dict__.keys()

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dict(self.__dict__))


def _section(name: str, data: Any, path: str) -> Any:
    schema = section_schema(name)
    if schema is not None:
        return from_dict(schema, {} if data is None else data, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {_describe(data)}")
    return Section(**{str(k): v for k, v in data.items()})


# -- the trainer section and the whole config ---------------------------------------------


def __getattr__(name: str) -> Any:
    if name == "TrainerConfig":
        from deepseek.config.trainer_options import trainer_config_class

        return trainer_config_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _trainer_default() -> Any:
    from deepseek.config.trainer_options import trainer_config_class

    return trainer_config_class()()


@dataclass
class Config:
    """A whole job. ``trainer`` holds every Trainer option (derived from its signature);
    ``distributed`` is the section deepseek-dist declares (a :class:`Section` otherwise);
    other registered sections are attributes too."""

    model: Component
    data: DataConfig
    optimizer: Component = field(default_factory=lambda: Component("AdamW", {"lr": 1e-3}))
    scheduler: SchedulerConfig | None = None
    trainer: Any = field(default_factory=_trainer_default)
    callbacks: list[Component] = field(default_factory=list)
    algorithms: list[AlgorithmConfig] = field(default_factory=list)
    seed: int | None = None
    output_dir: str = "runs/default"
    plot: bool = True
    distributed: Any = field(default_factory=lambda: _section("distributed", None, "distributed"))
    sections: dict[str, Any] = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        if sections is not None and not name.startswith("_") and section_schema(name) is not None:
            sections[name] = _section(name, None, name)  # a declared section left out: defaults
            return sections[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        data = {
            f.name: _to_plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "sections"
        }
        data.update({k: _to_plain(v) for k, v in self.sections.items()})
        return data


_CORE_KEYS = {f.name for f in dataclasses.fields(Config)} - {"sections"}

#: Where a Trainer argument that is not in the ``trainer`` section is set instead.
SET_ELSEWHERE = {
    "trainer.batch_size": "data.batch_size",
    "trainer.shuffle": "data.shuffle",
    "trainer.seed": "seed (top level)",
    "trainer.callbacks": "callbacks (top level)",
    "trainer.scheduler": "scheduler (top level)",
    "trainer.scheduler_kwargs": "scheduler (top level)",
    "trainer.scheduler_interval": "scheduler.interval",
    "trainer.optimizer": "optimizer (top level)",
    "trainer.optimizer_kwargs": "optimizer (top level)",
    "trainer.default_root_dir": "output_dir (top level)",
    "trainer.loss_fn": "trainer.loss",
    "trainer.precision_kwargs": "trainer.precision: {name: ..., <options>}",
    "trainer.train_data": "data.train",
    "trainer.val_data": "data.val",
    "trainer.model": "model (top level)",
}

#: Largest seed: numpy's seeding needs it below 2**32.
MAX_SEED = 2**32 - 1


# -- YAML value -> dataclass ---------------------------------------------------------------


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from plain YAML data, checking keys and types."""
    where = path or "<root>"
    if cls in (Component, SchedulerConfig, AlgorithmConfig):
        return _component(cls, data, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(data)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "sections"}
    extra: dict[str, Any] = {}
    for key in data:
        if key in fields:
            continue
        if cls is Config and isinstance(key, str) and section_schema(key) is not None:
            extra[key] = _section(key, data[key], key)
            continue
        full = _join(path, key)
        if full in SET_ELSEWHERE:
            raise ConfigError(f"{full}: not a key here; set it as {SET_ELSEWHERE[full]}")
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{full}: unknown key.{hint} Allowed keys: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name not in data:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required:
                raise ConfigError(f"{key_path}: required key is missing")
            continue
        if cls is Config and name == "distributed":
            values[name] = _section(name, data[name], key_path)
        elif cls is Config and name == "trainer":
            from deepseek.config.trainer_options import trainer_config_class

            values[name] = from_dict(trainer_config_class(), data[name], key_path)
        else:
            value = data[name]
            if isinstance(value, dict) and "name" not in value:
                default = _default_of(f)
                if isinstance(default, Component):  # options for the default component
                    value = {"name": default.name, **default.kwargs, **value}
            values[name] = _convert(hints.get(name, Any), value, key_path)
    if cls is Config:
        for name in list(_SECTIONS):  # declared sections left out: their defaults
            if name not in extra and name not in _CORE_KEYS:
                extra[name] = _section(name, None, name)
        values["sections"] = extra
        _check_seed(values.get("seed"))
    return cls(**values)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _check_seed(seed: Any) -> None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            f"seed: {seed} is out of range; use an integer from 0 to {MAX_SEED} (2**32 - 1)"
        )


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: check what we can
        return {}


def _component(cls: type, data: Any, path: str) -> Any:
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ConfigError(
            f"{path}: expected a name or a mapping with a 'name' key "
            f"(e.g. {{name: AdamW, lr: 0.001}}), got {_describe(data)}"
        )
    data = dict(data)
    name = data.pop("name").strip()
    if not name:
        raise ConfigError(f"{path}.name: must not be empty")
    for key in data:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{path}: option {key!r} is not a valid keyword argument name")
    if cls is SchedulerConfig:
        interval = data.pop("interval", "step")
        from deepseek.training.resolve import SCHEDULER_INTERVALS  # the Trainer's own list

        _convert(Literal[tuple(SCHEDULER_INTERVALS)], interval, f"{path}.interval")
        return SchedulerConfig(name, interval, data)
    if cls is AlgorithmConfig:
        at = data.pop("at", "start")
        if not (at == "start" or (isinstance(at, int) and not isinstance(at, bool) and at >= 0)):
            raise ConfigError(
                f"{path}.at: {_describe(at)} is not allowed; use 'start' (before training) "
                "or an epoch number (0, 1, ...)"
            )
        return AlgorithmConfig(name, at, data)
    return Component(name, data)


def convert(hint: Any, value: Any, path: str) -> Any:
    """Check ``value`` against type ``hint`` (as YAML can express it); return it
    converted (int -> float, list -> tuple); raise ConfigError naming ``path``."""
    return _convert(hint, value, path)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own error names the problem best
            return _convert(real[0], value, path)
        # Exact types first, so 3 stays an int in ``int | float``.
        for option in sorted(real, key=lambda o: not _exact(o, value)):
            try:
                return _convert(option, value, path)
            except ConfigError:
                continue
        allowed = " or ".join(_type_name(o) for o in options)
        raise ConfigError(f"{path}: {_describe(value)} is not allowed; expected {allowed}")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise ConfigError(
                f"{path}: {value!r} is not allowed; use one of {', '.join(map(repr, allowed))}"
            )
        return value
    if hint is Any or hint is object:
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence,
                  collections.abc.Iterable, collections.abc.Collection):  # fmt: skip
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected a list of {len(args)} values, got {value!r}")
            return tuple(
                _convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))
            )
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"{path}: {_describe(value)} is not a number; expected a float such as 0.001"
            )
        if not math.isfinite(value):
            raise ConfigError(
                f"{path}: {value} is not a finite number (a value like 1e400 overflows); "
                "use a finite float"
            )
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: {_describe(value)} is not allowed; expected int")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {_describe(value)} is not allowed; expected str")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {_describe(value)} is not allowed; expected true or false")
        return value
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{path}: {_describe(value)} is not allowed; expected null")
        return None
    return value


def _exact(hint: Any, value: Any) -> bool:
    return isinstance(hint, type) and type(value) is hint


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " or ".join(map(repr, typing.get_args(hint)))
    if origin is not None:
        return {list: "a list", tuple: "a list", dict: "a mapping"}.get(origin, str(hint))
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _to_plain(value: Any) -> Any:
    if isinstance(value, (Component, SchedulerConfig, AlgorithmConfig, Section)):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if isinstance(value, Config):
            return value.to_dict()
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
