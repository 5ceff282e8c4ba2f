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

from deepseek.plugins.manager import (
    PluginConflictError,
    PluginManager,
    PluginRecord,
    get_plugin_manager,
)
from deepseek.plugins.specs import SPEC_TYPES, Spec

# Names that first-party distributions provide, so a missing one gets an install hint.
PROVIDED_BY: dict[str, dict[str, str]] = {
    "strategy": {"ddp": "deepseek-dist"},
    "algorithm": {name: "deepseek-quant" for name in ("ptq", "l1_channel_pruning", "distillation")},
    "model": {
        **{
            name: "deepseek-nlp"
            for name in ("bert", "bert-base-chinese", "bert-base-uncased", "bert-tiny")
        },
        **{name: "deepseek-vision" for name in ("resnet18", "resnet34", "resnet50")},
        "moe-mlp": "deepseek-moe",
    },
}

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


class Registry:
    """All records of one kind. Built on first use; rebuilt after run-time registration."""

    def __init__(self, kind: str, manager: PluginManager | None = None) -> None:
        if kind not in SPEC_TYPES:
            raise ValueError(f"unknown registry kind {kind!r}; known: {sorted(SPEC_TYPES)}")
        self.kind = kind
        self.spec_type = SPEC_TYPES[kind]
        self.hook_name = HOOK_FOR_KIND[kind]
        self._manager = manager
        self._index: dict[str, Spec] = {}
        self._providers: dict[str, PluginRecord] = {}
        self._generation = -1
        self._manager_serial = -1

    @property
    def manager(self) -> PluginManager:
        return self._manager or get_plugin_manager()

    # -- building --------------------------------------------------------------------
    def _ensure(self) -> None:
        manager = self.manager
        if self._generation == manager.generation and self._manager_serial == manager.serial:
            return
        index: dict[str, Spec] = {}
        providers: dict[str, PluginRecord] = {}
        caller = getattr(manager.hook, self.hook_name)
        # get_hookimpls() lists the latest registration last-but-first; registration
        # order (built-ins first) makes "who came first" in conflicts meaningful.
        for impl in sorted(caller.get_hookimpls(), key=lambda i: self._order(manager, i)):
            record = manager.record_for(impl.plugin_name)
            for spec in self._call(manager, impl, record):
                self._add(index, providers, spec, record)
        self._index, self._providers = index, providers
        self._generation, self._manager_serial = manager.generation, manager.serial

    @staticmethod
    def _order(manager: PluginManager, impl: Any) -> int:
        names = [name for name, _ in manager.list_name_plugin()]
        return names.index(impl.plugin_name) if impl.plugin_name in names else len(names)

    def _call(self, manager: PluginManager, impl: Any, record: PluginRecord) -> list[Spec]:
        where = f"plugin {record.name!r} ({record.distribution})"
        try:
            result = impl.function()
        except Exception as exc:  # noqa: BLE001 - a broken hook must not break the host
            manager.report(f"{where} raised in {self.hook_name}(): {type(exc).__name__}: {exc}")
            return []
        if result is None:
            return []
        items: Iterable[Any] = [result] if isinstance(result, Spec) else result
        try:
            items = list(items)
        except TypeError:
            manager.report(
                f"{where} returned {type(result).__name__} from {self.hook_name}(); "
                f"expected a list of {self.spec_type.__name__}"
            )
            return []
        except Exception as exc:  # noqa: BLE001 - a generator hook that raises midway
            manager.report(f"{where} raised in {self.hook_name}(): {type(exc).__name__}: {exc}")
            return []
        valid = []
        for item in items:
            problem = self._problem(item)
            if problem:
                manager.report(
                    f"{where} returned a malformed record from {self.hook_name}(): {problem}"
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

    def _add(
        self,
        index: dict[str, Spec],
        providers: dict[str, PluginRecord],
        spec: Spec,
        record: PluginRecord,
    ) -> None:
        existing = index.get(spec.name)
        if existing is not None and not spec.override:
            if existing.override:
                return  # the earlier record was declared as the override
            other = providers[spec.name]
            raise PluginConflictError(
                f"{self.kind} {spec.name!r} is registered twice: by plugin {other.name!r} "
                f"({other.distribution}) and by plugin {record.name!r} ({record.distribution}). "
                "Uninstall one, block one with DEEPSEEK_DISABLED_PLUGINS, or mark the "
                "intended replacement with override=True."
            )
        index[spec.name] = spec
        providers[spec.name] = record
        record.registered.setdefault(self.kind, [])
        if spec.name not in record.registered[self.kind]:
            record.registered[self.kind].append(spec.name)

    # -- lookup ------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._index)

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return isinstance(name, str) and normalize_name(name) in self._index

    def __iter__(self) -> Iterator[Spec]:
        self._ensure()
        return iter([self._index[name] for name in sorted(self._index)])

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
        candidates = known + [n for n, dist in provided.items() if not _installed(dist)]
        close = difflib.get_close_matches(key, [c for c in candidates if c != key], n=1)
        if close:
            message += f" Did you mean {close[0]!r}?"
        listed = ", ".join(known) if known else "(none installed)"
        return f"{message} Known {PLURAL[self.kind]}: {listed}."


_REGISTRIES: dict[str, Registry] = {}


def registry(kind: str) -> Registry:
    """The registry of one kind: backend, strategy, precision, callback, algorithm, model."""
    if kind not in _REGISTRIES:
        _REGISTRIES[kind] = Registry(kind)
    return _REGISTRIES[kind]
