"""Registries: the hook results of one kind, flattened, validated and indexed once.

``deepseek.plugins.registry("strategy").get("ddp")`` returns the ``StrategySpec``; an
unknown name lists the known ones and, when a first-party distribution that is not
installed provides it, the ``pip install`` line.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
from collections.abc import Iterable, Iterator
from typing import Any

from deepseek.plugins.first_party import install_hints
from deepseek.plugins.hookspecs import HOOK_NAMES
from deepseek.plugins.manager import (
    PluginConflictError,
    PluginManager,
    PluginRecord,
    Registration,
    get_plugin_manager,
)
from deepseek.plugins.specs import SPEC_TYPES, Spec

# Names that first-party siblings register, for the "pip install" hint when the sibling
# is missing: derived from the one first-party table (first_party.py), never listed here.
PROVIDED_BY: dict[str, dict[str, str]] = install_hints()

HOOK_FOR_KIND = {
    "backend": "deepseek_backends",
    "strategy": "deepseek_strategies",
    "precision": "deepseek_precisions",
    "callback": "deepseek_callbacks",
    "algorithm": "deepseek_algorithms",
    "model": "deepseek_models",
    "metric": "deepseek_metrics",
}

PLURAL = {
    "backend": "backends",
    "strategy": "strategies",
    "precision": "precisions",
    "callback": "callbacks",
    "algorithm": "algorithms",
    "model": "models",
    "metric": "metrics",
}


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


class UnknownNameError(LookupError, ValueError):
    """A name that no installed plugin registered."""


def normalize_name(name: str) -> str:
    return name.strip().lower()


@dataclasses.dataclass
class Conflict:
    """One name registered by several plugins with no single override among them."""

    kind: str
    name: str
    providers: list[PluginRecord]

    def message(self) -> str:
        who = " and by ".join(f"plugin {r.name!r} ({r.distribution})" for r in self.providers)
        return (
            f"{self.kind} {self.name!r} is registered twice: by {who}. Uninstall one, block "
            "one with DEEPSEEK_DISABLED_PLUGINS, or mark the intended replacement with "
            "override=True."
        )


class Registry:
    """All records of one kind. Built on first use; rebuilt after run-time registration.

    The hook is called through pluggy, one plugin at a time in pluggy's own order (see
    ``PluginManager.call_each``), so ``tryfirst``/``trylast``, tracing and hook monitoring
    apply and every record is credited to the plugin that returned it.
    """

    def __init__(self, kind: str, manager: PluginManager | None = None) -> None:
        if kind not in SPEC_TYPES:
            raise ValueError(f"unknown registry kind {kind!r}; known: {sorted(SPEC_TYPES)}")
        self.kind = kind
        self.spec_type = SPEC_TYPES[kind]
        self.hook_name = HOOK_FOR_KIND[kind]
        self._manager = manager
        self._index: dict[str, Spec] = {}
        self._providers: dict[str, PluginRecord] = {}
        self.conflicts: dict[str, Conflict] = {}
        self._generation = -1
        self._manager_serial = -1

    @property
    def manager(self) -> PluginManager:
        return self._manager or get_plugin_manager()

    # -- building --------------------------------------------------------------------
    def build(self) -> None:
        """Call the hook (once per change of the plugin set) and index its records.
        Never raises for a conflict: lookups do, listings show it."""
        manager = self.manager
        if self._generation == manager.generation and self._manager_serial == manager.serial:
            return
        stale = {c.message() for c in self.conflicts.values()}
        for record in manager.records.values():  # forget what the last build credited
            record.registered.pop(self.kind, None)
            record.entries = [e for e in record.entries if e.kind != self.kind]
            record.problems = [p for p in record.problems if p not in stale]
        index: dict[str, Spec] = {}
        providers: dict[str, PluginRecord] = {}
        claims: dict[str, list[tuple[Spec, PluginRecord]]] = {}
        for record, call in manager.call_each(self.hook_name):
            for spec in self._call(manager, record, call):
                claims.setdefault(spec.name, []).append((spec, record))
                names = record.registered.setdefault(self.kind, [])
                if spec.name not in names:
                    names.append(spec.name)
        conflicts: dict[str, Conflict] = {}
        for name, claimants in claims.items():
            overrides = [c for c in claimants if c[0].override]
            if len(claimants) == 1 or len(overrides) == 1:
                spec, record = overrides[0] if overrides else claimants[0]
                index[name], providers[name] = spec, record
                self._credit(
                    record,
                    spec,
                    "active" if len(claimants) == 1 else "overrides",
                    [r for _, r in claimants if r is not record],
                )
                for other_spec, other in claimants:
                    if other is not record:
                        self._credit(other, other_spec, "overridden", [record])
                continue
            ordered = self._registration_order(manager, [r for _, r in claimants])
            conflicts[name] = Conflict(self.kind, name, ordered)
            for spec, record in claimants:
                self._credit(record, spec, "conflict", [r for r in ordered if r is not record])
                if conflicts[name].message() not in record.problems:
                    record.problems.append(conflicts[name].message())
        self._index, self._providers, self.conflicts = index, providers, conflicts
        self._generation, self._manager_serial = manager.generation, manager.serial

    def _credit(
        self, record: PluginRecord, spec: Spec, state: str, others: list[PluginRecord]
    ) -> None:
        other = ", ".join(f"{o.name!r} ({o.distribution})" for o in others) or None
        record.entries.append(Registration(self.kind, spec.name, spec.description, state, other))

    @staticmethod
    def _registration_order(
        manager: PluginManager, records: list[PluginRecord]
    ) -> list[PluginRecord]:
        # Only for messages: name the plugin registered first (e.g. core) first.
        names = [name for name, _ in manager.list_name_plugin()]
        return sorted(records, key=lambda r: names.index(r.name) if r.name in names else 1 << 30)

    def _ensure(self) -> None:
        self.build()
        if self.conflicts:
            first = next(iter(self.conflicts.values()))
            raise PluginConflictError(first.message())

    def _call(self, manager: PluginManager, record: PluginRecord, call: Any) -> list[Spec]:
        function = getattr(manager.get_plugin(record.name), self.hook_name, None)
        where = _location(function)
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - a broken hook must not break the host
            manager.report(
                record, f"raised in {self.hook_name}(): {type(exc).__name__}: {exc}", where=where
            )
            return []
        if result is None:
            return []
        items: Iterable[Any] = [result] if isinstance(result, Spec) else result
        try:
            items = list(items)
        except TypeError:
            manager.report(
                record,
                f"returned {type(result).__name__} from {self.hook_name}(); "
                f"expected a list of {self.spec_type.__name__}",
                where=where,
            )
            return []
        except Exception as exc:  # noqa: BLE001 - a generator hook that raises midway
            manager.report(
                record, f"raised in {self.hook_name}(): {type(exc).__name__}: {exc}", where=where
            )
            return []
        valid = []
        for item in items:
            problem = self._problem(item)
            if problem:
                manager.report(
                    record,
                    f"returned a malformed record from {self.hook_name}(): {problem}",
                    where=where,
                    skipped=True,
                )
                continue
            valid.append(dataclasses.replace(item, name=normalize_name(item.name)))
        return valid

    def _problem(self, item: Any) -> str | None:
        expected = self.spec_type.__name__
        if not isinstance(item, self.spec_type):
            return f"{item!r} is a {type(item).__name__}, expected {expected}"
        if not isinstance(item.name, str) or not item.name.strip():
            return f"{expected} has no name (got {item.name!r})"
        if not callable(item.factory):
            return f"{expected} {item.name!r} has a factory that is not callable ({item.factory!r})"
        if not isinstance(item.description, str):
            return f"{expected} {item.name!r} has a description that is not a string"
        return None

    # -- lookup ------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._index)

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return isinstance(name, str) and normalize_name(name) in self._index

    def __iter__(self) -> Iterator[Spec]:
        """Records in the order pluggy returned them (no re-sort)."""
        self._ensure()
        return iter(list(self._index.values()))

    def __len__(self) -> int:
        self._ensure()
        return len(self._index)

    def get(self, name: str) -> Spec:
        """The record registered under ``name`` (case and surrounding spaces ignored)."""
        if not isinstance(name, str):
            raise TypeError(
                f"{self.kind} name must be a string, got {type(name).__name__} ({name!r})"
            )
        self._ensure()
        key = normalize_name(name)
        if key in self._index:
            return self._index[key]
        raise UnknownNameError(self._unknown_message(name))

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the object registered under ``name``."""
        return self.get(name).create(*args, **kwargs)

    def provider(self, name: str) -> PluginRecord:
        """The plugin (and distribution) that registered ``name``."""
        self.get(name)
        return self._providers[normalize_name(name)]

    def _unknown_message(self, name: str) -> str:
        key = normalize_name(name)
        known = sorted(self._index)
        message = f"unknown {self.kind} {name!r}."
        provided = PROVIDED_BY.get(self.kind, {})
        if key in provided and not _installed(provided[key]):
            dist = provided[key]
            return (
                f"{message} {self.kind.capitalize()} {key!r} is provided by the {dist} "
                f"package, which is not installed: pip install {dist}"
            )
        why = self._not_loaded_providers(key, provided.get(key))
        if why:
            message += " " + why
        candidates = known + [n for n, dist in provided.items() if not _installed(dist)]
        close = difflib.get_close_matches(key, [c for c in candidates if c != key], n=1)
        if close:
            message += f" Did you mean {close[0]!r}?"
        listed = ", ".join(known) if known else "(none installed)"
        return f"{message} Known {PLURAL[self.kind]}: {listed}."

    def _not_loaded_providers(self, key: str, first_party_dist: str | None) -> str:
        """Say which installed plugins did not load and would (or may) provide ``key``."""
        manager = self.manager
        sure: list[str] = []
        maybe: list[str] = []
        for record in manager.not_loaded():
            who = f"plugin {record.name!r} ({record.distribution})"
            if record.status == "partial":
                wrong = [h for h in record.unknown_hooks if _closest_hook(h) == self.hook_name]
                if not wrong:
                    continue
                provides = key in _names_from_misspelled(manager, record, wrong)
                text = (
                    f"{who}, which implements {wrong[0]!r} instead of {self.hook_name!r}, so "
                    f"none of its {PLURAL[self.kind]} are registered: rename the hook"
                )
                (sure if provides else maybe).append(text)
                continue
            state = "was disabled" if record.status == "disabled" else "failed to load"
            text = f"{who}, which {state}: {record.error}"
            if first_party_dist and record.matches(first_party_dist):
                sure.append(text)
            else:
                maybe.append(text)
        if sure:
            return f"It is provided by {'; '.join(sure)}."
        if maybe:
            return f"It may come from a plugin that did not load: {'; '.join(maybe)}."
        return ""


def _closest_hook(name: str) -> str | None:
    close = difflib.get_close_matches(name, HOOK_NAMES, n=1)
    return close[0] if close else None


def _names_from_misspelled(
    manager: PluginManager, record: PluginRecord, hooks: list[str]
) -> set[str]:
    """What a misspelled registration hook would have registered (called guarded; it is
    the plugin's own zero-argument function, already imported)."""
    plugin = manager.get_plugin(record.name)
    names: set[str] = set()
    for hook in hooks:
        function = getattr(plugin, hook, None)
        try:
            result = function() if callable(function) else None
            items = [result] if isinstance(result, Spec) else list(result or [])
        except Exception:  # noqa: BLE001 - only a hint; the hook is broken anyway
            continue
        names.update(
            normalize_name(i.name) for i in items if isinstance(getattr(i, "name", None), str)
        )
    return names


def _location(function: Any) -> tuple[str, int, str] | None:
    from deepseek.plugins.manager import _source_location

    return _source_location(function) if function is not None else None


_REGISTRIES: dict[str, Registry] = {}


def registry(kind: str) -> Registry:
    """The registry of one kind: backend, strategy, precision, callback, algorithm, model,
    metric."""
    if kind not in _REGISTRIES:
        _REGISTRIES[kind] = Registry(kind)
    return _REGISTRIES[kind]
