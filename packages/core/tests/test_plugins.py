"""The plugin system through run-time registration (``deepseek.plugins.register``):
lookup errors, name normalisation, conflicts and overrides, validation of what hooks
return, ``deferred`` factories and the plugin listing. Entry-point discovery itself is
tested in test_plugin_discovery.py."""

from __future__ import annotations

import doctest
import gc
import importlib.metadata
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest

import deepseek as ds
import deepseek.plugins as plugins
from deepseek.backends.cpu import CPUBackend
from deepseek.plugins import (
    AlgorithmSpec,
    BackendSpec,
    CallbackSpec,
    DeepSeekPluginWarning,
    PluginConflictError,
    PluginError,
    PluginLoadError,
    StrategySpec,
    UnknownNameError,
    deferred,
    hookimpl,
    registry,
)
from deepseek.plugins.registry import PROVIDED_BY

pytestmark = pytest.mark.usefixtures("fresh_plugins")


def make_plugin(**hooks: Callable[..., Any]) -> types.SimpleNamespace:
    """A plugin object implementing the given hooks (hook name -> function)."""
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def backend_plugin(name: str, description: str = "", override: bool = False):
    return make_plugin(
        deepseek_backends=lambda: [BackendSpec(name, CPUBackend, description, override)]
    )


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_package_docstring_example_runs() -> None:
    result = doctest.testmod(plugins, report=False)
    assert result.attempted >= 5 and result.failed == 0


# -- lookup errors -----------------------------------------------------------------------


def test_unknown_name_lists_known_names_and_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError) as info:
        registry("backend").get("cpuu")
    message = str(info.value)
    assert "unknown backend 'cpuu'" in message
    assert "Did you mean 'cpu'?" in message
    known = message.split("Known backends:")[1]
    for name in ("cpu", "cuda", "rocm"):
        assert name in known


def test_unknown_name_error_is_a_lookup_and_value_error() -> None:
    with pytest.raises(LookupError):
        registry("precision").get("bf16-mixd")
    with pytest.raises(ValueError, match="Did you mean 'bf16-mixed'"):
        registry("precision").get("bf16-mixd")


def test_far_off_name_gets_no_suggestion_but_the_list() -> None:
    with pytest.raises(UnknownNameError) as info:
        registry("callback").get("zzzzzzzz")
    assert "Did you mean" not in str(info.value)
    assert "model_checkpoint" in str(info.value)


def test_non_string_name_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be a string"):
        registry("strategy").get(3)  # type: ignore[arg-type]


def test_unknown_registry_kind() -> None:
    with pytest.raises(ValueError, match="unknown registry kind 'optimizer'"):
        registry("optimizer")


def first_party_names() -> list[tuple[str, str, str]]:
    """(kind, name, distribution) for every name core knows a first-party package provides,
    plus DESIGN.md's own example (strategy "ddp" from deepseek-dist)."""
    rows = {
        (kind, name, dist) for kind, table in PROVIDED_BY.items() for name, dist in table.items()
    }
    return sorted(rows | {("strategy", "ddp", "deepseek-dist")})


@pytest.mark.parametrize(("kind", "name", "distribution"), first_party_names())
def test_first_party_name_not_installed_gives_the_pip_line(
    kind: str, name: str, distribution: str
) -> None:
    if installed(distribution):
        pytest.skip(f"{distribution} is installed here")
    with pytest.raises(UnknownNameError) as info:
        registry(kind).get(f" {name.upper()} ")
    message = str(info.value)
    assert f"pip install {distribution}" in message
    assert repr(name) in message


@pytest.mark.parametrize(("kind", "name", "distribution"), first_party_names())
def test_installed_first_party_package_provides_what_the_hint_promises(
    kind: str, name: str, distribution: str
) -> None:
    # Otherwise a user who followed the pip line would still get "unknown ...".
    if not installed(distribution):
        pytest.skip(f"{distribution} is not installed here")
    assert registry(kind).provider(name).distribution == distribution


# -- names ---------------------------------------------------------------------------------


def test_names_are_lowercased_and_stripped() -> None:
    plugins.register(
        make_plugin(deepseek_callbacks=lambda: [CallbackSpec("  My_Callback ", dict, "a dict")]),
        name="shouty",
    )
    reg = registry("callback")
    assert "my_callback" in reg.names()
    assert "  My_Callback " not in reg.names()
    spec = reg.get(" MY_CALLBACK")
    assert spec.name == "my_callback"
    assert "My_Callback" in reg
    assert reg.create("my_callback", every=3) == {"every": 3}


def test_a_single_record_may_be_returned_without_a_list() -> None:
    plugins.register(
        make_plugin(deepseek_algorithms=lambda: AlgorithmSpec("solo", dict, "alone")),
        name="solo-plugin",
    )
    assert registry("algorithm").get("solo").description == "alone"


# -- conflicts and overrides ---------------------------------------------------------------


def test_same_name_from_two_plugins_is_a_conflict_naming_both() -> None:
    plugins.register(backend_plugin("dupe"), name="first-plugin")
    plugins.register(backend_plugin("dupe"), name="second-plugin")
    with pytest.raises(PluginConflictError) as info:
        registry("backend").get("dupe")
    message = str(info.value)
    assert "'first-plugin'" in message and "'second-plugin'" in message
    assert "override=True" in message
    # Listing plugins still works while a registry is in conflict.
    assert {r.name for r in plugins.plugins()} >= {"core", "first-plugin", "second-plugin"}
    plugins.unregister("second-plugin")
    assert registry("backend").provider("dupe").name == "first-plugin"


def test_reusing_a_core_name_is_a_conflict_naming_core() -> None:
    plugins.register(backend_plugin("cpu"), name="impostor")
    with pytest.raises(PluginConflictError, match=r"'core' \(deepseek-core\).*'impostor'"):
        ds.backends.names()


@pytest.mark.parametrize("override_first", [True, False])
def test_override_wins_whatever_the_order(override_first: bool) -> None:
    plain = backend_plugin("dupe", "plain")
    override = backend_plugin("dupe", "override", override=True)
    order = [("over", override), ("plain", plain)]
    for name, plugin in order if override_first else reversed(order):
        plugins.register(plugin, name=name)
    assert registry("backend").get("dupe").description == "override"
    assert registry("backend").provider("dupe").name == "over"


def test_override_replaces_a_core_record() -> None:
    plugins.register(backend_plugin("cpu", "my cpu", override=True), name="mine")
    assert registry("backend").get("cpu").description == "my cpu"
    assert registry("backend").provider("cpu").name == "mine"


# -- what hooks return ---------------------------------------------------------------------

MALFORMED = {
    "empty name": (BackendSpec("", CPUBackend), "has no name"),
    "blank name": (BackendSpec("   ", CPUBackend), "has no name"),
    "missing name": (BackendSpec(None, CPUBackend), "has no name"),  # type: ignore[arg-type]
    "non-callable factory": (BackendSpec("bad", 42), "not callable"),  # type: ignore[arg-type]
    "wrong spec type": (StrategySpec("bad", CPUBackend), "expected BackendSpec"),
    "not a record": ({"name": "bad"}, "expected BackendSpec"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_record_is_reported_and_skipped(case: str) -> None:
    bad, problem = MALFORMED[case]
    good = BackendSpec("goodone", CPUBackend, "fine")
    plugins.register(make_plugin(deepseek_backends=lambda: [bad, good]), name="sloppy")
    with pytest.warns(DeepSeekPluginWarning) as caught:
        names = registry("backend").names()
    messages = [str(w.message) for w in caught]
    assert any("'sloppy'" in m and problem in m and "skipped" in m for m in messages), messages
    assert "goodone" in names and "cpu" in names
    assert "bad" not in names


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_record_is_an_error_in_strict_mode(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, problem = MALFORMED[case]
    monkeypatch.setenv("DEEPSEEK_STRICT_PLUGINS", "1")
    plugins.register(make_plugin(deepseek_backends=lambda: [bad]), name="sloppy")
    with pytest.raises(PluginLoadError, match=rf"'sloppy'.*{problem}.*DEEPSEEK_STRICT_PLUGINS"):
        registry("backend").names()


def test_non_iterable_result_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    plugins.register(make_plugin(deepseek_backends=lambda: 42), name="numeric")
    with pytest.warns(DeepSeekPluginWarning, match=r"'numeric'.*returned int.*BackendSpec"):
        names = registry("backend").names()
    assert "cpu" in names
    monkeypatch.setenv("DEEPSEEK_STRICT_PLUGINS", "1")
    plugins.register(backend_plugin("trigger-rebuild"), name="other")
    with pytest.raises(PluginLoadError, match="'numeric'"):
        registry("backend").names()


def test_hook_returning_none_registers_nothing_quietly(recwarn: pytest.WarningsRecorder) -> None:
    plugins.register(make_plugin(deepseek_models=lambda: None), name="empty")
    registry("model").names()
    record = next(r for r in plugins.plugins() if r.name == "empty")
    assert record.registered == {}
    assert not [w for w in recwarn if "'empty'" in str(w.message)]


def _boom() -> list[BackendSpec]:
    raise RuntimeError("the driver exploded")


def test_hook_that_raises_is_reported_and_others_survive(monkeypatch: pytest.MonkeyPatch) -> None:
    plugins.register(
        make_plugin(
            deepseek_backends=_boom,
            deepseek_callbacks=lambda: [CallbackSpec("still_here", dict, "")],
        ),
        name="explosive",
    )
    plugins.register(backend_plugin("neighbour"), name="neighbour-plugin")
    with pytest.warns(DeepSeekPluginWarning, match=r"'explosive'.*RuntimeError: the driver"):
        names = registry("backend").names()
    assert {"cpu", "cuda", "rocm", "neighbour"} <= set(names)
    assert "still_here" in registry("callback")

    monkeypatch.setenv("DEEPSEEK_STRICT_PLUGINS", "1")
    plugins.unregister("neighbour-plugin")  # forces a rebuild under strict mode
    with pytest.raises(PluginLoadError, match="'explosive'"):
        registry("backend").names()


def test_generator_hook_that_raises_midway_is_reported_not_raised() -> None:
    # A generator is an iterable of records, so it is a valid hook result; its body runs
    # only while the registry iterates it, and a failure there must be guarded too.
    def records():
        yield BackendSpec("early", CPUBackend)
        raise RuntimeError("lazy failure")

    plugins.register(make_plugin(deepseek_backends=records), name="lazy")
    with pytest.warns(DeepSeekPluginWarning, match=r"'lazy'.*lazy failure"):
        names = registry("backend").names()
    assert "cpu" in names


def test_misspelled_hook_is_reported_with_a_suggestion() -> None:
    plugin = make_plugin(deepseek_bakends=lambda: [BackendSpec("never", CPUBackend)])
    with pytest.warns(DeepSeekPluginWarning, match=r"'deepseek_bakends'.*'deepseek_backends'"):
        plugins.register(plugin, name="typo")
    record = next(r for r in plugins.plugins() if r.name == "typo")
    assert record.unknown_hooks == ["deepseek_bakends"]
    assert "never" not in registry("backend")


# -- run-time registration -----------------------------------------------------------------


def test_registries_rebuild_after_register_and_unregister() -> None:
    before = registry("backend").names()
    assert "late" not in before
    assert plugins.register(backend_plugin("late"), name="latecomer") == "latecomer"
    assert "late" in registry("backend").names()
    assert "late" in ds.backends.names()
    plugins.unregister("latecomer")
    assert registry("backend").names() == before
    with pytest.raises(UnknownNameError):
        ds.backends.get("late")


def test_register_twice_and_unregister_unknown_are_errors() -> None:
    plugins.register(backend_plugin("once"), name="once")
    with pytest.raises(PluginError, match="already registered"):
        plugins.register(backend_plugin("twice"), name="once")
    with pytest.raises(PluginError, match="no plugin named 'ghost'"):
        plugins.unregister("ghost")


def test_a_module_registers_under_its_own_name() -> None:
    module = types.ModuleType("my_runtime_plugin")
    module.deepseek_strategies = hookimpl(lambda: [StrategySpec("solo", dict, "one")])
    assert plugins.register(module) == "my_runtime_plugin"
    assert registry("strategy").provider("solo").name == "my_runtime_plugin"


def test_plugins_lists_records_with_what_they_registered() -> None:
    plugins.register(
        make_plugin(
            deepseek_backends=lambda: [BackendSpec("listed", CPUBackend, "")],
            deepseek_callbacks=lambda: [CallbackSpec("listed_cb", dict, "")],
        ),
        name="lister",
    )
    records = {r.name: r for r in plugins.plugins()}
    core = records["core"]
    assert core.distribution == "deepseek-core" and core.first_party
    assert core.status == "loaded"
    assert {"cpu", "cuda", "rocm"} <= set(core.registered["backend"])
    assert "single" in core.registered["strategy"]
    assert "model_checkpoint" in core.registered["callback"]
    mine = records["lister"]
    assert mine.status == "runtime" and not mine.first_party
    assert mine.registered == {"backend": ["listed"], "callback": ["listed_cb"]}


def test_registry_follows_a_reset_manager() -> None:
    # A registry must notice that the manager was replaced even when the new one happens
    # to sit at the old one's address with the same number of changes: reset, collect,
    # and re-register a different plugin a few times.
    for round_ in range(30):
        name = f"round{round_}"
        plugins.register(backend_plugin(name), name="roundabout")
        assert name in registry("backend").names(), f"stale registry in round {round_}"
        plugins.reset_plugin_manager()
        gc.collect()


# -- deferred factories --------------------------------------------------------------------


def test_deferred_imports_only_when_called(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "ds_deferred_target_mod"
    (tmp_path / f"{module}.py").write_text(
        "class Outer:\n"
        "    class Inner:\n"
        "        def __init__(self, *args, **kwargs):\n"
        "            self.args, self.kwargs = args, kwargs\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    factory = deferred(f"{module}:Outer.Inner")
    spec = BackendSpec("deferred-thing", factory, "")
    assert module not in sys.modules  # creating the record imported nothing
    built = spec.create(1, two=2)
    assert module in sys.modules
    assert type(built).__qualname__ == "Outer.Inner"
    assert (built.args, built.kwargs) == ((1,), {"two": 2})
    assert factory.target == f"{module}:Outer.Inner"
    monkeypatch.delitem(sys.modules, module)


def test_deferred_to_a_missing_module_fails_when_called() -> None:
    factory = deferred("ds_no_such_module_anywhere:Thing")
    with pytest.raises(ModuleNotFoundError, match="ds_no_such_module_anywhere"):
        factory()


@pytest.mark.parametrize(
    "target", ["", "no_colon", ":Thing", "pkg.mod:", "pkg.mod:Thing:extra", "pkg mod:Thing"]
)
def test_deferred_rejects_malformed_targets(target: str) -> None:
    with pytest.raises(ValueError, match="package.module:attribute"):
        deferred(target)
