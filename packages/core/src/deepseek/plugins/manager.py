"""The plugin manager: discovers plugins once, lazily, and survives broken ones.

Follows conda's pattern: a cached ``get_plugin_manager()``; entry points of group
``deepseek`` loaded one by one, each guarded, so a third-party plugin that fails to
import is reported and skipped instead of taking the host down (pluggy's own
``load_setuptools_entrypoints`` stops at the first failure). Hooks that no spec declares
(usually a misspelling) are reported, like tox does with ``check_pending()``.

Environment variables:

- ``DEEPSEEK_STRICT_PLUGINS=1``: a plugin that fails to load or returns bad records is
  an error instead of a warning.
- ``DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD=1``: load first-party plugins only.
- ``DEEPSEEK_PLUGINS=a,b``: load only these third-party plugins (first-party ones load).
- ``DEEPSEEK_DISABLED_PLUGINS=a,b``: never load these (any plugin, by entry-point name).
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import itertools
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from deepseek.plugins import hookspecs

FIRST_PARTY_DISTRIBUTIONS = frozenset(
    {
        "deepseek-core",
        "deepseek-dist",
        "deepseek-quant",
        "deepseek-nlp",
        "deepseek-vision",
        "deepseek-moe",
    }
)

ENTRY_POINT_GROUP = "deepseek"
_SERIALS = itertools.count()


class PluginError(Exception):
    """Base class of plugin-system errors."""


class PluginLoadError(PluginError):
    """A plugin failed to import or returned malformed records (strict mode only)."""


class PluginConflictError(PluginError):
    """Two plugins registered the same name and neither is marked ``override=True``."""


class DeepSeekPluginWarning(UserWarning):
    """A plugin was skipped or misbehaved; the message says which and why."""


@dataclass
class PluginRecord:
    """What ``deepseek plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    first_party: bool
    status: str = "loaded"  # loaded | failed | disabled | runtime
    error: str | None = None
    unknown_hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> names


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {item.strip().lower() for item in value.split(",") if item.strip()}


def strict_mode() -> bool:
    return _env_flag("DEEPSEEK_STRICT_PLUGINS")


def _normalize_dist(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus guarded discovery and a record of every plugin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.serial = next(_SERIALS)  # tells managers apart (ids of dead objects get reused)
        self.generation = 0  # bumped on every change; registries rebuild when it moves
        self._lock = threading.RLock()

    # -- discovery -----------------------------------------------------------------
    def load_entrypoints(self) -> None:
        """Import and register every ``deepseek`` entry point, each load guarded."""
        autoload = not _env_flag("DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD")
        allowed = _env_list("DEEPSEEK_PLUGINS")
        blocked = _env_list("DEEPSEEK_DISABLED_PLUGINS") or set()
        seen: set[tuple[str, str]] = set()
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        # First-party plugins first (core's built-ins before everything), then the rest.
        ordered = sorted(entry_points, key=lambda ep: self._sort_key(ep))
        for ep in ordered:
            if (ep.name, ep.value) in seen:  # a distribution visible twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            dist = ep.dist.name if ep.dist is not None else "<unknown>"
            version = ep.dist.version if ep.dist is not None else "?"
            first_party = _normalize_dist(dist) in FIRST_PARTY_DISTRIBUTIONS
            record = PluginRecord(ep.name, dist, version, ep.value, first_party)
            name = ep.name.strip().lower()
            reason = None
            if name in blocked:
                reason = "disabled by DEEPSEEK_DISABLED_PLUGINS"
            elif not first_party and not autoload:
                reason = "disabled by DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD"
            elif not first_party and allowed is not None and name not in allowed:
                reason = "not listed in DEEPSEEK_PLUGINS"
            if reason:
                record.status, record.error = "disabled", reason
                self.records[ep.name] = record
                continue
            if ep.name in self.records:
                other = self.records[ep.name]
                # Keep the first plugin's record; file the rejected one under its own key.
                record.name = f"{ep.name} ({dist})"
                self._fail(
                    record,
                    f"uses the plugin name {ep.name!r}, already used by {other.distribution}; "
                    "one of them must rename its entry point",
                )
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is reported
                self._fail(record, f"failed to import {ep.value}: {type(exc).__name__}: {exc}")
                continue
            self._register_checked(plugin, record)

    @staticmethod
    def _sort_key(ep: importlib.metadata.EntryPoint) -> tuple[int, str]:
        dist = _normalize_dist(ep.dist.name) if ep.dist is not None else ""
        if dist == "deepseek-core":
            return (0, ep.name)
        return (1 if dist in FIRST_PARTY_DISTRIBUTIONS else 2, ep.name)

    def _register_checked(self, plugin: Any, record: PluginRecord) -> None:
        try:
            self.register(plugin, name=record.name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors, duplicates
            self._fail(record, f"could not be registered: {exc}")
            return
        self._check_hooks(plugin, record)
        self.records[record.name] = record
        self.generation += 1

    def _check_hooks(self, plugin: Any, record: PluginRecord) -> None:
        """Report hooks no spec declares (usually misspellings), like tox's check_pending."""
        record.unknown_hooks = self._unknown_hooks(plugin)
        for hook in record.unknown_hooks:
            known = [h for h in dir(hookspecs) if h.startswith("deepseek_")]
            close = difflib.get_close_matches(hook, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self._warn(
                f"plugin {record.name!r} ({record.distribution}) implements {hook!r}, "
                f"which is not a deepseek hook{hint}; it is ignored"
            )

    def _unknown_hooks(self, plugin: Any) -> list[str]:
        unknown = []
        for attr in dir(plugin):
            if self.parse_hookimpl_opts(plugin, attr) is None:
                continue
            caller = getattr(self.hook, attr, None)
            if caller is None or caller.spec is None:
                unknown.append(attr)
        return unknown

    # -- reporting -----------------------------------------------------------------
    def _fail(self, record: PluginRecord, message: str) -> None:
        record.status, record.error = "failed", message
        self.records[record.name] = record
        self.report(f"plugin {record.name!r} from {record.distribution} {message}")

    def report(self, message: str) -> None:
        """A plugin misbehaved: a warning, or an error under DEEPSEEK_STRICT_PLUGINS=1."""
        if strict_mode():
            raise PluginLoadError(message + " (DEEPSEEK_STRICT_PLUGINS=1 makes this an error)")
        self._warn(message + " -- skipped")

    @staticmethod
    def _warn(message: str) -> None:
        warnings.warn(message, DeepSeekPluginWarning, stacklevel=4)

    def record_for(self, plugin_name: str) -> PluginRecord:
        return self.records.get(
            plugin_name,
            PluginRecord(plugin_name, "<runtime>", "-", plugin_name, False, status="runtime"),
        )

    # -- run-time registration -----------------------------------------------------
    def register_plugin(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object (module or instance) now, e.g. from a test or a
        notebook. Returns the name it was registered under."""
        with self._lock:
            name = name or getattr(plugin, "__name__", None) or f"plugin-{id(plugin)}"
            if self.has_plugin(name):
                raise PluginError(
                    f"a plugin named {name!r} is already registered; pass another name= "
                    "or call deepseek.plugins.unregister first"
                )
            module = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", "?")
            record = PluginRecord(name, "<runtime>", "-", str(module), False, status="runtime")
            try:
                self.register(plugin, name=name)
            except pluggy.PluginValidationError as exc:
                raise PluginError(f"plugin {name!r} cannot be registered: {exc}") from None
            self._check_hooks(plugin, record)
            self.records[name] = record
            self.generation += 1
            return name

    def unregister_plugin(self, name: str) -> None:
        with self._lock:
            if not self.has_plugin(name):
                raise PluginError(f"no plugin named {name!r} is registered")
            self.unregister(name=name)
            self.records.pop(name, None)
            self.generation += 1


@functools.cache
def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use (entry points loaded once)."""
    manager = PluginManager()
    manager.load_entrypoints()
    return manager


def reset_plugin_manager() -> None:
    """Forget the manager so the next use rediscovers entry points (tests, notebooks
    after ``pip install``)."""
    get_plugin_manager.cache_clear()
