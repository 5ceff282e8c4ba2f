"""Entry-point discovery, for real: each test writes distributions (a package plus a
``.dist-info`` with METADATA and entry_points.txt) into a directory on ``sys.path`` and
lets ``importlib.metadata`` find them, exactly as it finds installed plugins."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys

import pytest

import deepseek as ds
import deepseek.plugins as plugins
from deepseek.cli import commands
from deepseek.plugins import (
    DeepSeekPluginWarning,
    PluginConflictError,
    PluginLoadError,
    get_plugin_manager,
    registry,
)

GOOD = """
from deepseek.backends.cpu import CPUBackend
from deepseek.plugins import BackendSpec, CallbackSpec, hookimpl


class GoodBackend(CPUBackend):
    name = "goodbackend"
    priority = -5


class GoodCallback:
    def __init__(self, **options):
        self.options = options


@hookimpl
def deepseek_backends():
    return [BackendSpec("goodbackend", GoodBackend, "a backend from a test distribution")]


@hookimpl
def deepseek_callbacks():
    return [CallbackSpec("good_callback", GoodCallback, "a callback from a test distribution")]
"""

BROKEN = """
raise RuntimeError("missing native library libsim.so")
"""


def backend_source(name: str, override: bool = False) -> str:
    return f"""
from deepseek.backends.cpu import CPUBackend
from deepseek.plugins import BackendSpec, hookimpl


@hookimpl
def deepseek_backends():
    return [BackendSpec({name!r}, CPUBackend, "from " + __name__, override={override})]
"""


def records() -> dict[str, plugins.PluginRecord]:
    return {r.name: r for r in plugins.plugins()}


def test_good_plugin_is_found_with_its_distribution(plugin_dists) -> None:
    module = plugin_dists.add("deepseek-plugin-good", GOOD, entry_name="good", version="2.3.4")
    provider = registry("backend").provider("goodbackend")
    assert (provider.name, provider.distribution, provider.version) == (
        "good",
        "deepseek-plugin-good",
        "2.3.4",
    )
    assert provider.status == "loaded" and not provider.first_party
    assert provider.module == module
    assert registry("callback").provider("good_callback") is provider

    backend = ds.backends.get("goodbackend")
    assert type(backend).__name__ == "GoodBackend" and backend.is_available()
    assert ds.backends.get("auto").name != "goodbackend"  # lower priority than cpu
    assert registry("callback").create("good_callback", every=2).options == {"every": 2}

    listed = records()
    assert list(listed)[0] == "core"  # core's built-ins are registered first
    assert listed["good"].registered == {
        "backend": ["goodbackend"],
        "callback": ["good_callback"],
    }


def test_plugin_that_fails_to_import_is_reported_and_skipped(plugin_dists, capsys) -> None:
    plugin_dists.add("deepseek-plugin-broken", BROKEN, entry_name="broken")
    plugin_dists.add("deepseek-plugin-good", GOOD, entry_name="good")
    with pytest.warns(DeepSeekPluginWarning) as caught:
        get_plugin_manager()
    [message] = [str(w.message) for w in caught if "'broken'" in str(w.message)]
    assert "deepseek-plugin-broken" in message
    assert "RuntimeError: missing native library libsim.so" in message

    listed = records()
    assert listed["broken"].status == "failed"
    assert "missing native library" in listed["broken"].error
    assert listed["good"].status == "loaded"  # one broken plugin does not stop the others
    assert "goodbackend" in ds.backends.names() and "cpu" in ds.backends.names()

    status = commands.run_plugins(argparse.Namespace(json=False))
    out = capsys.readouterr().out
    assert status == 1
    assert "broken  (deepseek-plugin-broken 1.0.0)  failed" in out
    assert "missing native library" in out


def test_failed_import_is_an_error_in_strict_mode(plugin_dists, monkeypatch) -> None:
    plugin_dists.add("deepseek-plugin-broken", BROKEN, entry_name="broken")
    monkeypatch.setenv("DEEPSEEK_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match=r"'broken' \(deepseek-plugin-broken\).*libsim"):
        get_plugin_manager()


def test_hook_with_a_wrong_signature_is_reported(plugin_dists) -> None:
    source = """
from deepseek.plugins import hookimpl

@hookimpl
def deepseek_backends(device_index):
    return []
"""
    plugin_dists.add("deepseek-plugin-args", source, entry_name="args")
    with pytest.warns(
        DeepSeekPluginWarning, match=r"(?s)'args' \(deepseek-plugin-args\).*device_index"
    ):
        get_plugin_manager()
    assert records()["args"].status == "failed"


def test_misspelled_hook_is_reported_with_a_suggestion(plugin_dists) -> None:
    source = """
from deepseek.plugins import hookimpl

@hookimpl
def deepseek_callback():
    return []
"""
    plugin_dists.add("deepseek-plugin-typo", source, entry_name="typo")
    with pytest.warns(
        DeepSeekPluginWarning,
        match=r"'typo' \(deepseek-plugin-typo\) implements 'deepseek_callback'.*"
        r"did you mean 'deepseek_callbacks'",
    ):
        get_plugin_manager()
    assert records()["typo"].unknown_hooks == ["deepseek_callback"]


def test_same_backend_from_two_distributions_is_a_conflict(plugin_dists) -> None:
    plugin_dists.add("deepseek-plugin-left", backend_source("twin"), entry_name="left")
    plugin_dists.add("deepseek-plugin-right", backend_source("twin"), entry_name="right")
    with pytest.raises(PluginConflictError) as info:
        ds.backends.get("twin")
    message = str(info.value)
    assert "deepseek-plugin-left" in message and "deepseek-plugin-right" in message
    assert "DEEPSEEK_DISABLED_PLUGINS" in message  # says how to resolve it


def test_conflict_is_resolved_by_disabling_one(plugin_dists, monkeypatch) -> None:
    plugin_dists.add("deepseek-plugin-left", backend_source("twin"), entry_name="left")
    plugin_dists.add("deepseek-plugin-right", backend_source("twin"), entry_name="right")
    monkeypatch.setenv("DEEPSEEK_DISABLED_PLUGINS", "right")
    assert registry("backend").provider("twin").distribution == "deepseek-plugin-left"


def test_conflict_is_resolved_by_an_override(plugin_dists) -> None:
    plugin_dists.add("deepseek-plugin-left", backend_source("twin"), entry_name="left")
    plugin_dists.add(
        "deepseek-plugin-right", backend_source("twin", override=True), entry_name="right"
    )
    assert registry("backend").provider("twin").distribution == "deepseek-plugin-right"


def test_two_distributions_with_one_entry_point_name(plugin_dists) -> None:
    # Both use the entry-point name "twin": one loads, the other is reported; the listing
    # must keep both, and what the loaded one registered must be credited to it.
    first = plugin_dists.add("deepseek-plugin-first", backend_source("one"), entry_name="twin")
    second = plugin_dists.add("deepseek-plugin-second", backend_source("two"), entry_name="twin")
    with pytest.warns(DeepSeekPluginWarning, match="'twin'.*already used"):
        get_plugin_manager()
    by_module = {first: "deepseek-plugin-first", second: "deepseek-plugin-second"}
    [loaded] = [m for m in by_module if m in sys.modules]
    [skipped] = [m for m in by_module if m != loaded]
    provider = registry("backend").provider("one" if loaded == first else "two")
    assert (provider.distribution, provider.status) == (by_module[loaded], "loaded")
    listed = sorted(
        (r.distribution, r.status)
        for r in plugins.plugins()
        if r.distribution in by_module.values()
    )
    assert listed == sorted([(by_module[loaded], "loaded"), (by_module[skipped], "failed")])


def test_disable_autoload_loads_first_party_only(plugin_dists, monkeypatch) -> None:
    plugin_dists.add("deepseek-plugin-good", GOOD, entry_name="good")
    monkeypatch.setenv("DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD", "1")
    listed = records()
    assert listed["core"].status == "loaded"
    assert listed["good"].status == "disabled"
    assert "DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD" in listed["good"].error
    assert all(r.first_party for r in listed.values() if r.status == "loaded")
    assert "goodbackend" not in ds.backends.names()
    assert "cpu" in ds.backends.names()


FIRST_PARTY = {"deepseek-dist", "deepseek-quant", "deepseek-nlp", "deepseek-vision", "deepseek-moe"}


def test_disable_autoload_keeps_other_first_party_distributions(plugin_dists, monkeypatch) -> None:
    installed = {
        ep.name
        for ep in importlib.metadata.entry_points(group="deepseek")
        if ep.dist is not None and ep.dist.name in FIRST_PARTY
    }
    if not installed:  # core alone: stand in a first-party distribution of our own
        plugin_dists.add("deepseek-moe", backend_source("moe-sim"), entry_name="moe")
        installed = {"moe"}
    monkeypatch.setenv("DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD", "1")
    listed = records()
    for name in installed:
        assert listed[name].first_party and listed[name].status == "loaded", listed[name]


def test_plugins_variable_loads_only_the_listed(plugin_dists, monkeypatch) -> None:
    plugin_dists.add("deepseek-plugin-a", backend_source("backend-a"), entry_name="a")
    plugin_dists.add("deepseek-plugin-b", backend_source("backend-b"), entry_name="b")
    monkeypatch.setenv("DEEPSEEK_PLUGINS", " A ")
    listed = records()
    assert listed["a"].status == "loaded"
    assert listed["b"].status == "disabled" and "DEEPSEEK_PLUGINS" in listed["b"].error
    assert listed["core"].status == "loaded"  # first-party plugins always load
    names = ds.backends.names()
    assert "backend-a" in names and "backend-b" not in names and "cpu" in names


def test_disabled_plugins_variable_blocks_the_listed(plugin_dists, monkeypatch) -> None:
    plugin_dists.add("deepseek-plugin-a", backend_source("backend-a"), entry_name="a")
    plugin_dists.add("deepseek-plugin-b", backend_source("backend-b"), entry_name="b")
    monkeypatch.setenv("DEEPSEEK_DISABLED_PLUGINS", "a")
    listed = records()
    assert listed["a"].status == "disabled"
    assert "DEEPSEEK_DISABLED_PLUGINS" in listed["a"].error
    assert listed["b"].status == "loaded"
    names = ds.backends.names()
    assert "backend-a" not in names and "backend-b" in names


def test_blocked_plugin_is_never_imported(plugin_dists, monkeypatch, tmp_path) -> None:
    witness = tmp_path / "imported"
    source = f"open({str(witness)!r}, 'w').close()\n" + BROKEN
    plugin_dists.add("deepseek-plugin-broken", source, entry_name="broken")
    monkeypatch.setenv("DEEPSEEK_DISABLED_PLUGINS", "broken")
    assert records()["broken"].status == "disabled"
    assert not witness.exists()


COUNTING = """
from deepseek.plugins import CallbackSpec, hookimpl

LOADS = 0


class _Plugin:
    @hookimpl
    def deepseek_callbacks(self):
        return [CallbackSpec("counted", dict, "")]


def __getattr__(name):
    # The entry point names attribute "plugin": each EntryPoint.load() comes here.
    global LOADS
    if name == "plugin":
        LOADS += 1
        return _Plugin()
    raise AttributeError(name)
"""


def test_manager_is_built_once_and_discovery_runs_once(plugin_dists) -> None:
    module = plugin_dists.add("deepseek-plugin-counting", COUNTING, attr="plugin")
    manager = get_plugin_manager()
    assert get_plugin_manager() is manager
    # Everything that consults plugins goes through the same manager.
    assert "counted" in registry("callback")
    ds.backends.names()
    plugins.plugins()
    registry("callback").get("counted")
    assert sys.modules[module].LOADS == 1

    plugins.reset_plugin_manager()
    assert get_plugin_manager() is not manager
    assert "counted" in registry("callback")
    assert sys.modules[module].LOADS == 2
