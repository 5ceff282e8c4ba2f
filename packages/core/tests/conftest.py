"""Shared fixtures: a clean plugin manager, and real fake distributions on sys.path.

``fresh_plugins`` forgets the process-wide plugin manager (and the backend instances and
registries built from it) before and after a test, with the ``DEEPSEEK_*`` plugin
variables unset, so a test that registers plugins or changes the environment cannot leak
into the next one.

``plugin_dists`` writes real distributions into ``tmp_path`` -- a package directory plus
a ``<name>-<version>.dist-info`` with ``METADATA`` and ``entry_points.txt`` -- which
``importlib.metadata`` discovers exactly like installed ones once the directory is on
``sys.path`` (or on ``PYTHONPATH`` for a subprocess).
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PLUGIN_ENV_VARS = (
    "DEEPSEEK_STRICT_PLUGINS",
    "DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD",
    "DEEPSEEK_PLUGINS",
    "DEEPSEEK_DISABLED_PLUGINS",
)


def forget_plugins() -> None:
    """Drop everything built from the current plugin manager; the next use rediscovers."""
    import deepseek.backends
    import deepseek.plugins

    # ``deepseek.plugins.registry`` is the function; the module sits in sys.modules.
    registry_module = importlib.import_module("deepseek.plugins.registry")
    deepseek.plugins.reset_plugin_manager()
    deepseek.backends._instances.clear()
    registry_module._REGISTRIES.clear()


@pytest.fixture
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in PLUGIN_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    forget_plugins()
    yield
    forget_plugins()


@pytest.fixture
def rediscover() -> Callable[[], None]:
    """A function that drops the manager mid-test, e.g. after changing DEEPSEEK_* variables."""
    return forget_plugins


@dataclass
class PluginDists:
    """Writes fake-but-real plugin distributions into one directory."""

    root: Path
    modules: list[str] = field(default_factory=list)

    def add(
        self,
        dist: str,
        source: str,
        *,
        entry_name: str | None = None,
        attr: str | None = None,
        version: str = "1.0.0",
    ) -> str:
        """Write distribution ``dist`` whose entry point ``entry_name`` (default: the
        distribution name) loads a fresh package holding ``source``; returns the
        package's (unique) import name."""
        module = f"dsplugin_{uuid.uuid4().hex[:10]}"
        package = self.root / module
        package.mkdir()
        (package / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
        )
        target = f"{module}:{attr}" if attr else module
        (info / "entry_points.txt").write_text(
            f"[deepseek]\n{entry_name or dist} = {target}\n", encoding="utf-8"
        )
        self.modules.append(module)
        # importlib caches directory listings by mtime, which is coarser than this loop.
        importlib.invalidate_caches()
        return module

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for a subprocess that sees these distributions (and none of the
        caller's DEEPSEEK_* plugin settings)."""
        env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV_VARS}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.root), os.environ.get("PYTHONPATH", "")) if p
        )
        env.update(extra)
        return env


@pytest.fixture
def plugin_dists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugins: None
) -> Iterator[PluginDists]:
    root = tmp_path / "site"
    root.mkdir()
    dists = PluginDists(root)
    monkeypatch.syspath_prepend(str(root))  # also invalidates importlib's caches
    yield dists
    forget_plugins()
    for module in dists.modules:
        sys.modules.pop(module, None)
