"""The plugin system: hookspecs, registration records, the manager and registries.

Write a plugin::

    from deepseek.plugins import BackendSpec, hookimpl

    @hookimpl
    def deepseek_backends():
        return [BackendSpec("sim", SimBackend, "a simulated accelerator")]

then either declare it as an entry point (group ``deepseek``) in your distribution, or
register it at run time (tests, notebooks)::

    >>> import sys, deepseek.plugins as plugins
    >>> from deepseek.plugins import AlgorithmSpec, hookimpl
    >>> class Demo:
    ...     @hookimpl
    ...     def deepseek_algorithms(self):
    ...         return [AlgorithmSpec("noop", lambda: None, "does nothing")]
    >>> plugins.register(Demo(), name="demo")
    'demo'
    >>> "noop" in plugins.registry("algorithm")
    True
    >>> plugins.unregister("demo")
"""

from __future__ import annotations

from typing import Any

from deepseek.plugins.commands import CommandParser
from deepseek.plugins.hookspecs import hookimpl, hookspec
from deepseek.plugins.manager import (
    DeepSeekPluginWarning,
    PluginConflictError,
    PluginError,
    PluginLoadError,
    PluginManager,
    PluginRecord,
    get_plugin_manager,
    reset_plugin_manager,
)
from deepseek.plugins.registry import UnknownNameError, registry
from deepseek.plugins.specs import (
    AlgorithmSpec,
    BackendSpec,
    CallbackSpec,
    MetricSpec,
    ModelSpec,
    PrecisionSpec,
    Spec,
    StrategySpec,
    deferred,
)

__all__ = [
    "AlgorithmSpec",
    "BackendSpec",
    "CallbackSpec",
    "CommandParser",
    "DeepSeekPluginWarning",
    "MetricSpec",
    "ModelSpec",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "PluginManager",
    "PluginRecord",
    "PrecisionSpec",
    "Spec",
    "StrategySpec",
    "UnknownNameError",
    "deferred",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "plugins",
    "register",
    "registry",
    "reset_plugin_manager",
    "unregister",
]


def register(plugin: Any, name: str | None = None) -> str:
    """Register a plugin object now (module, class instance); returns its name."""
    return get_plugin_manager().register_plugin(plugin, name)


def unregister(name: str) -> None:
    """Remove a plugin registered with :func:`register`."""
    get_plugin_manager().unregister_plugin(name)


def plugins() -> list[PluginRecord]:
    """Every discovered plugin (loaded, failed or disabled), with what it registered."""
    manager = get_plugin_manager()
    for kind in ("backend", "strategy", "precision", "callback", "algorithm", "model", "metric"):
        # build() fills PluginRecord.registered and records conflicts without raising;
        # a conflict is raised when that registry is used for real.
        registry(kind).build()
    return list(manager.records.values())
