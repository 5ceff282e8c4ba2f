"""The plugin manager: discovers plugins once, lazily, and survives broken ones.

Follows conda's pattern: a cached ``get_plugin_manager()``; entry points of group
``deepseek`` loaded one by one, each guarded, so a third-party plugin that fails to
import is reported and skipped instead of taking the host down (pluggy's own
``load_setuptools_entrypoints`` stops at the first failure). Hooks that no spec declares
(usually a misspelling) are reported, like tox does with ``check_pending()``.

Every problem is recorded on the plugin's :class:`PluginRecord` (``deepseek plugins`` and
``deepseek env`` list them) and warned about once, pointing at the plugin's own file.

Environment variables:

- ``DEEPSEEK_STRICT_PLUGINS=1``: every plugin problem (import error, misspelled hook,
  malformed record, a hook that raises) is an error instead of a warning.
- ``DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD=1``: load first-party plugins only.
- ``DEEPSEEK_PLUGINS=a,b``: load only these third-party plugins (first-party ones load).
- ``DEEPSEEK_DISABLED_PLUGINS=a,b``: never load these (plugin or distribution names).
  Core cannot be disabled: it provides the ``plugins`` and ``env`` commands themselves.

Names in the last two that match no installed plugin are warned about, with the closest
installed name.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import inspect
import itertools
import os
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pluggy

from deepseek.plugins import hookspecs
from deepseek.plugins.first_party import (
    CORE,
    DISTRIBUTIONS,
    is_first_party,
    normalize_distribution,
)

# Kept for code that imported it from here; the table lives in first_party.py.
FIRST_PARTY_DISTRIBUTIONS = DISTRIBUTIONS

ENTRY_POINT_GROUP = "deepseek"
STRICT_HINT = "DEEPSEEK_STRICT_PLUGINS=1 makes this an error"
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
class Registration:
    """One name a plugin registered, as ``deepseek plugins`` lists it."""

    kind: str  # a registry kind, or "command" for a CLI subcommand
    name: str
    description: str
    state: str = "active"  # active | overrides | overridden | conflict
    other: str | None = None  # the plugin on the other side of an override or conflict


@dataclass
class PluginRecord:
    """What ``deepseek plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    first_party: bool
    status: str = "loaded"  # loaded | partial | failed | disabled | runtime
    error: str | None = None
    unknown_hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    problems: list[str] = field(default_factory=list)  # everything reported about it
    entries: list[Registration] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # CLI subcommands it added

    @property
    def ok(self) -> bool:
        """Loaded with nothing to report (disabled on purpose also counts as ok)."""
        return self.status in ("loaded", "runtime", "disabled") and not self.problems

    def label(self) -> str:
        return f"plugin {self.name!r} ({self.distribution})"

    def matches(self, name: str) -> bool:
        """``name`` is this plugin's entry-point name or its distribution's name."""
        key = name.strip().lower()
        return key == self.name.lower() or normalize_distribution(key) == normalize_distribution(
            self.distribution
        )

    def matches_any(self, names: Iterable[str]) -> bool:
        return any(self.matches(name) for name in names)


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
    return normalize_distribution(name)


def _source_location(obj: Any) -> tuple[str, int, str] | None:
    """(file, line, module) of a function, class or module, for warnings."""
    target = inspect.unwrap(obj) if callable(obj) else obj
    try:
        filename = inspect.getsourcefile(target) or inspect.getfile(target)
    except TypeError:
        return None
    code = getattr(target, "__code__", None)
    line = code.co_firstlineno if code is not None else 1
    module = getattr(target, "__module__", None) or getattr(target, "__name__", "plugin")
    return filename, line, module


def _traceback_location(tb: TracebackType | None) -> tuple[str, int, str] | None:
    """The innermost frame of an import failure that is a real file (not importlib's)."""
    found = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith("<"):
            module = tb.tb_frame.f_globals.get("__name__", "plugin")
            found = (code.co_filename, tb.tb_lineno, module)
        tb = tb.tb_next
    return found


def hook_function(plugin: Any, hook_name: str) -> Any:
    """The function a plugin object implements ``hook_name`` with (or None)."""
    return getattr(plugin, hook_name, None)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus guarded discovery and a record of every plugin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.serial = next(_SERIALS)  # tells managers apart (ids of dead objects get reused)
        self.generation = 0  # bumped on every change; registries rebuild when it moves
        self._lock = threading.RLock()
        self._warned: set[str] = set()
        self.environment_problems: list[str] = []  # unknown names in DEEPSEEK_* variables

    # -- discovery -----------------------------------------------------------------
    def load_entrypoints(self) -> None:
        """Import and register every ``deepseek`` entry point, each load guarded."""
        autoload = not _env_flag("DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD")
        allowed = _env_list("DEEPSEEK_PLUGINS")
        blocked = _env_list("DEEPSEEK_DISABLED_PLUGINS") or set()
        seen: set[tuple[str, str]] = set()
        entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        self._check_environment(entry_points, allowed, blocked)
        # First-party plugins first (core's built-ins before everything), then the rest.
        ordered = sorted(entry_points, key=lambda ep: self._sort_key(ep))
        for ep in ordered:
            if (ep.name, ep.value) in seen:  # a distribution visible twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            dist = ep.dist.name if ep.dist is not None else "<unknown>"
            version = ep.dist.version if ep.dist is not None else "?"
            first_party = is_first_party(dist)
            record = PluginRecord(ep.name, dist, version, ep.value, first_party)
            is_core = _normalize_dist(dist) == CORE.distribution
            reason = None
            if not is_core and record.matches_any(blocked):
                reason = "disabled by DEEPSEEK_DISABLED_PLUGINS"
            elif not first_party and not autoload:
                reason = "disabled by DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD"
            elif not first_party and allowed is not None and not record.matches_any(allowed):
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
                self._fail(
                    record,
                    f"failed to import {ep.value}: {type(exc).__name__}: {exc}",
                    where=_traceback_location(exc.__traceback__),
                )
                continue
            self._register_checked(plugin, record)

    def _check_environment(
        self,
        entry_points: list[importlib.metadata.EntryPoint],
        allowed: set[str] | None,
        blocked: set[str],
    ) -> None:
        """Warn about names in DEEPSEEK_PLUGINS / DEEPSEEK_DISABLED_PLUGINS that match no
        installed plugin (a typo there silently disables or keeps a plugin)."""
        known: set[str] = set()
        for ep in entry_points:
            known.add(ep.name.lower())
            if ep.dist is not None:
                known.add(_normalize_dist(ep.dist.name))
        core_names = {CORE.plugin, CORE.distribution}
        variables = (("DEEPSEEK_PLUGINS", allowed), ("DEEPSEEK_DISABLED_PLUGINS", blocked))
        for variable, names in variables:
            for name in sorted(names or ()):
                if variable == "DEEPSEEK_DISABLED_PLUGINS" and _normalize_dist(name) in core_names:
                    self._environment_problem(
                        f"DEEPSEEK_DISABLED_PLUGINS names {name!r}, but core cannot be disabled: "
                        "it provides the backends, the Trainer's parts and the 'plugins' and "
                        "'env' commands; it stays loaded",
                        variable,
                    )
                    continue
                if name in known or _normalize_dist(name) in known:
                    continue
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                installed = ", ".join(sorted(ep.name for ep in entry_points)) or "(none)"
                self._environment_problem(
                    f"{variable} names {name!r}, which is no installed plugin or distribution"
                    f"{hint} (installed plugins: {installed})",
                    variable,
                )

    def _environment_problem(self, message: str, variable: str) -> None:
        self.environment_problems.append(message)
        if strict_mode():
            raise PluginLoadError(f"{message} ({STRICT_HINT})")
        self._warn(message, where=(variable, 0, "deepseek.plugins"))

    @staticmethod
    def _sort_key(ep: importlib.metadata.EntryPoint) -> tuple[int, str]:
        dist = _normalize_dist(ep.dist.name) if ep.dist is not None else ""
        if dist == CORE.distribution:
            return (0, ep.name)
        return (1 if dist in DISTRIBUTIONS else 2, ep.name)

    def _register_checked(self, plugin: Any, record: PluginRecord) -> None:
        try:
            self.register(plugin, name=record.name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors, duplicates
            self._fail(record, f"could not be registered: {exc}")
            return
        self.records[record.name] = record
        self.generation += 1
        self._check_hooks(plugin, record)

    def _check_hooks(self, plugin: Any, record: PluginRecord) -> None:
        """Report hooks no spec declares (usually misspellings), like tox's check_pending."""
        record.unknown_hooks = self._unknown_hooks(plugin)
        for hook in record.unknown_hooks:
            close = difflib.get_close_matches(hook, hookspecs.HOOK_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            message = f"implements {hook!r}, which is not a deepseek hook{hint}; it is ignored"
            if record.status == "loaded":
                record.status = "partial"
                record.error = message
            self.report(record, message, where=_source_location(hook_function(plugin, hook)))

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
    def _fail(
        self, record: PluginRecord, message: str, where: tuple[str, int, str] | None = None
    ) -> None:
        record.status, record.error = "failed", message
        self.records[record.name] = record
        self.report(record, message, where=where, skipped=True)

    def report(
        self,
        record: PluginRecord | str,
        message: str | None = None,
        *,
        where: tuple[str, int, str] | None = None,
        skipped: bool = False,
    ) -> None:
        """A plugin misbehaved: recorded on its record, then a warning pointing at the
        plugin's own code, or an error under DEEPSEEK_STRICT_PLUGINS=1."""
        if isinstance(record, str):  # the old one-argument form: report(message)
            record, message = None, record  # type: ignore[assignment]
        assert message is not None
        if record is not None:
            if message not in record.problems:
                record.problems.append(message)
            text = f"{record.label()} {message}"
            if where is None:
                where = _source_location_of_module(record.module)
        else:
            text = message
        if strict_mode():
            raise PluginLoadError(f"{text} ({STRICT_HINT})")
        self._warn(text + (" -- skipped" if skipped else ""), where=where)

    def _warn(self, message: str, where: tuple[str, int, str] | None = None) -> None:
        if message in self._warned:  # each problem once per manager
            return
        self._warned.add(message)
        if where is None:
            warnings.warn(message, DeepSeekPluginWarning, stacklevel=3)
            return
        filename, line, module = where
        # A registry of our own: without one, the "default" action shows nothing.
        warnings.warn_explicit(
            message, DeepSeekPluginWarning, filename, line, module=module, registry={}
        )

    def record_for(self, plugin_name: str) -> PluginRecord:
        return self.records.get(
            plugin_name,
            PluginRecord(plugin_name, "<runtime>", "-", plugin_name, False, status="runtime"),
        )

    def not_loaded(self) -> list[PluginRecord]:
        """Plugins that are installed but contribute nothing or only part of what they
        implement: failed, disabled, or with misspelled hooks."""
        return [r for r in self.records.values() if r.status in ("failed", "disabled", "partial")]

    # -- calling registration hooks through pluggy -------------------------------------
    def call_each(self, hook_name: str) -> Iterable[tuple[PluginRecord, Callable[..., Any]]]:
        """For each plugin implementing ``hook_name``, in the order pluggy calls them
        (``tryfirst``/``trylast`` and registration order respected), its record and a
        function ``call(**hook_kwargs)`` that calls its implementation *through pluggy*
        (tracing, hook-call monitoring and wrappers apply) and returns its result, so
        every result is credited to the plugin that returned it."""
        caller = getattr(self.hook, hook_name)
        plain = [i for i in caller.get_hookimpls() if not (i.wrapper or i.hookwrapper)]
        for impl in reversed(plain):  # pluggy calls the last of get_hookimpls() first
            others = [other.plugin for other in plain if other is not impl]
            subset = self.subset_hook_caller(hook_name, remove_plugins=others)

            def call(subset: Any = subset, **kwargs: Any) -> Any:
                results = subset(**kwargs)
                return results[0] if results else None

            yield self.record_for(impl.plugin_name), call

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
                hash(plugin)
            except TypeError:  # pluggy's subset callers keep plugins in sets
                plugin = _HashablePlugin(plugin)
            try:
                self.register(plugin, name=name)
            except pluggy.PluginValidationError as exc:
                raise PluginError(f"plugin {name!r} cannot be registered: {exc}") from None
            self.records[name] = record
            self.generation += 1
            try:
                self._check_hooks(plugin, record)
            except PluginLoadError:
                self.unregister(name=name)  # strict mode: a misspelled hook is an error
                self.records.pop(name, None)
                self.generation += 1
                raise
            return name

    def unregister_plugin(self, name: str) -> None:
        with self._lock:
            if not self.has_plugin(name):
                raise PluginError(f"no plugin named {name!r} is registered")
            self.unregister(name=name)
            self.records.pop(name, None)
            self.generation += 1


class _HashablePlugin:
    """Stands in for an unhashable plugin object (a dataclass instance, a
    SimpleNamespace): pluggy sees the same hook functions through it."""

    def __init__(self, plugin: Any) -> None:
        object.__setattr__(self, "_plugin", plugin)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_plugin"), name)

    def __dir__(self) -> list[str]:
        return dir(object.__getattribute__(self, "_plugin"))

    def __repr__(self) -> str:
        return repr(object.__getattribute__(self, "_plugin"))


def _source_location_of_module(module: str) -> tuple[str, int, str] | None:
    """Where a plugin's entry-point module lives, without importing anything new."""
    import sys

    name = module.partition(":")[0]
    loaded = sys.modules.get(name)
    filename = getattr(loaded, "__file__", None)
    return (filename, 1, name) if filename else None


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
