"""Plugin authoring faults, each tried as a new plugin author meets it, through the real
``deepseek`` CLI with real (tiny) plugin distributions on ``sys.path``: one clear message
and a non-zero exit where it is an error, never a raw traceback."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import deepseek as ds
import deepseek.plugins as plugins
from deepseek.cli import main
from deepseek.plugins import (
    CallbackSpec,
    CommandParser,
    DeepSeekPluginWarning,
    PluginLoadError,
    UnknownNameError,
    get_plugin_manager,
    hookimpl,
    registry,
)

JSONL_TYPO = """
from deepseek.plugins import CallbackSpec, hookimpl


class JsonlLogger:
    pass


@hookimpl
def deepseek_callback():  # misspelled: the hook is deepseek_callbacks
    return [CallbackSpec("jsonl_logger", JsonlLogger, "append metrics to a JSONL file")]
"""

JSONL_GOOD = JSONL_TYPO.replace("def deepseek_callback()", "def deepseek_callbacks()")

BROKEN = 'raise ImportError("this plugin needs libjsonl >= 2")\n'

CLASH_WITH_CORE = """
from deepseek.plugins import CallbackSpec, hookimpl


class MyCSV:
    pass


@hookimpl
def deepseek_callbacks():
    return [CallbackSpec("csv_logger", MyCSV, "my own csv logger", override={override})]
"""

NEW_STYLE_CLI = """
from deepseek.plugins import hookimpl


def greet(args):
    print(f"hi {args.who}")
    return 0


@hookimpl
def deepseek_cli(parser):
    cmd = parser.add_command("greet", help="say hi", func=greet)
    cmd.add_argument("who")
    mine = parser.add_command("profile", help="my own profile", override=True, func=greet)
    mine.add_argument("who")
"""

TRAIN_CONFIG = """
output_dir: runs
model: {name: "tinyjob:Tiny"}
data: {train: {name: "tinyjob:data"}, batch_size: 4}
optimizer: {name: SGD, lr: 0.1}
trainer: {max_epochs: 1, loss: cross_entropy}
callbacks:
  - {name: csv_logger}
"""

TINY_JOB = """
import torch


class Tiny(torch.nn.Linear):
    def __init__(self):
        super().__init__(4, 2)


def data():
    return torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
"""


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    try:
        status = main(list(args))
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def deepseek(plugin_dists, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deepseek.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=plugin_dists.env(**env),
        cwd=plugin_dists.root,
    )


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


# -- misspelled hooks ----------------------------------------------------------------------


def test_misspelled_hook_is_not_listed_as_loaded_and_fails_plugins(plugin_dists, capsys) -> None:
    plugin_dists.add("deepseek-jsonl", JSONL_TYPO, entry_name="jsonl")
    status, out, _ = run_cli(capsys, "plugins")
    assert status == 1
    [line] = [line for line in out.splitlines() if line.startswith("jsonl ")]
    assert "loaded" not in line and "partial" in line
    assert "'deepseek_callback'" in out and "did you mean 'deepseek_callbacks'" in out


def test_misspelled_hook_is_an_error_in_strict_mode(plugin_dists) -> None:
    plugin_dists.add("deepseek-jsonl", JSONL_TYPO, entry_name="jsonl")
    result = deepseek(plugin_dists, "plugins", DEEPSEEK_STRICT_PLUGINS="1")
    assert result.returncode == 1
    assert_no_traceback(result)
    [line] = result.stderr.strip().splitlines()
    assert "'jsonl'" in line and "deepseek_callback" in line and "DEEPSEEK_STRICT_PLUGINS" in line


def test_misspelled_hook_in_strict_mode_is_refused_at_run_time_registration(
    fresh_plugins, monkeypatch
) -> None:
    monkeypatch.setenv("DEEPSEEK_STRICT_PLUGINS", "1")

    class Typo:
        @hookimpl
        def deepseek_bakends(self):
            return []

    with pytest.raises(PluginLoadError, match="deepseek_bakends"):
        plugins.register(Typo(), name="typo")
    assert not get_plugin_manager().has_plugin("typo")


# -- a name the plugin that did not load would have provided ---------------------------------


def test_name_from_a_plugin_with_a_misspelled_hook_says_so(plugin_dists) -> None:
    plugin_dists.add("deepseek-jsonl", JSONL_TYPO, entry_name="jsonl")
    with pytest.warns(DeepSeekPluginWarning):
        get_plugin_manager()
    with pytest.raises(UnknownNameError) as info:
        registry("callback").get("jsonl_logger")
    message = str(info.value)
    assert "It is provided by plugin 'jsonl' (deepseek-jsonl)" in message
    assert "implements 'deepseek_callback' instead of 'deepseek_callbacks'" in message


def test_name_from_a_plugin_that_failed_to_import_says_so(plugin_dists) -> None:
    plugin_dists.add("deepseek-jsonl", BROKEN, entry_name="jsonl")
    with pytest.warns(DeepSeekPluginWarning):
        get_plugin_manager()
    with pytest.raises(UnknownNameError) as info:
        registry("callback").get("jsonl_logger")
    message = str(info.value)
    assert "plugin 'jsonl' (deepseek-jsonl), which failed to load" in message
    assert "libjsonl >= 2" in message


def test_name_from_a_disabled_plugin_says_so(plugin_dists, monkeypatch) -> None:
    plugin_dists.add("deepseek-jsonl", JSONL_GOOD, entry_name="jsonl")
    assert "jsonl_logger" in registry("callback")
    plugins.reset_plugin_manager()
    monkeypatch.setenv("DEEPSEEK_DISABLED_PLUGINS", "jsonl")
    with pytest.raises(UnknownNameError) as info:
        registry("callback").get("jsonl_logger")
    assert "plugin 'jsonl' (deepseek-jsonl), which was disabled" in str(info.value)
    assert "DEEPSEEK_DISABLED_PLUGINS" in str(info.value)


def test_name_from_a_disabled_first_party_sibling_says_so(fresh_plugins, monkeypatch) -> None:
    from deepseek.plugins.first_party import FIRST_PARTY

    installed = {r.distribution for r in plugins.plugins() if r.status == "loaded"}
    siblings = [d for d in FIRST_PARTY[1:] if d.distribution in installed and d.hints]
    if not siblings:
        pytest.skip("no first-party sibling with registered names is installed")
    sibling = siblings[0]
    kind, names = next(iter(sibling.hints.items()))
    plugins.reset_plugin_manager()
    monkeypatch.setenv("DEEPSEEK_DISABLED_PLUGINS", sibling.distribution)
    with pytest.raises(UnknownNameError) as info:
        registry(kind).get(names[0])
    message = str(info.value)
    expected = f"It is provided by plugin {sibling.plugin!r} ({sibling.distribution}), which"
    assert expected in message and "DEEPSEEK_DISABLED_PLUGINS" in message


# -- clashes and overrides -------------------------------------------------------------------


def test_clash_with_a_builtin_in_plugins_listing(plugin_dists, capsys) -> None:
    plugin_dists.add("deepseek-mycsv", CLASH_WITH_CORE.format(override=False), entry_name="mycsv")
    status, out, err = run_cli(capsys, "plugins")
    assert status == 1
    assert "Traceback" not in out + err
    assert "csv_logger" in out and "CLASH with 'mycsv' (deepseek-mycsv)" in out
    assert "CLASH with 'core' (deepseek-core)" in out
    assert "callback 'csv_logger' is registered twice" in out
    # The rest of the listing is still there (not half a listing, then a traceback).
    assert "model_checkpoint" in out and out.rstrip().splitlines()[-1].strip()


def test_clash_with_a_builtin_in_train_is_one_line(plugin_dists, tmp_path) -> None:
    plugin_dists.add("deepseek-mycsv", CLASH_WITH_CORE.format(override=False), entry_name="mycsv")
    config = tmp_path / "job.yaml"
    config.write_text(TRAIN_CONFIG, encoding="utf-8")
    (tmp_path / "tinyjob.py").write_text(TINY_JOB, encoding="utf-8")
    result = deepseek(plugin_dists, "train", str(config))
    assert result.returncode != 0
    assert_no_traceback(result)
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert any("csv_logger" in line and "deepseek-mycsv" in line for line in errors)


def test_clash_with_a_builtin_fails_env(plugin_dists, capsys) -> None:
    plugin_dists.add("deepseek-mycsv", CLASH_WITH_CORE.format(override=False), entry_name="mycsv")
    status, out, _ = run_cli(capsys, "env", "--json")
    assert status == 1
    errors = [p["message"] for p in json.loads(out)["problems"] if p["severity"] == "error"]
    clash = [m for m in errors if "'csv_logger' is registered twice" in m]
    assert len(clash) == 1 and "deepseek-mycsv" in clash[0], errors


def test_override_of_a_builtin_is_listed_as_overridden(plugin_dists, capsys) -> None:
    plugin_dists.add("deepseek-mycsv", CLASH_WITH_CORE.format(override=True), entry_name="mycsv")
    status, out, _ = run_cli(capsys, "plugins")
    rows = [line.split() for line in out.splitlines() if " csv_logger " in line]
    core_row = next(line for line in out.splitlines() if "append metrics to a CSV file" in line)
    mine_row = next(line for line in out.splitlines() if "my own csv logger" in line)
    assert len(rows) == 2
    assert "[overridden by 'mycsv' (deepseek-mycsv)]" in core_row
    assert "[overrides 'core' (deepseek-core)]" in mine_row
    assert "CLASH" not in out
    assert registry("callback").get("csv_logger").description == "my own csv logger"
    assert status in (0, 1)  # other installed plugins may have problems of their own
    assert "mycsv  (deepseek-mycsv 1.0.0)  loaded\n" in out


# -- strict mode, import errors ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["plugins", "env", "train"])
def test_strict_import_error_is_one_line_for_every_command(plugin_dists, command) -> None:
    plugin_dists.add("deepseek-jsonl", BROKEN, entry_name="jsonl")
    args = [command] + (["missing.yaml"] if command == "train" else [])
    result = deepseek(plugin_dists, *args, DEEPSEEK_STRICT_PLUGINS="1")
    assert result.returncode == 1
    assert_no_traceback(result)
    [line] = result.stderr.strip().splitlines()
    assert f"deepseek {command}: error:" in line and "libjsonl >= 2" in line


# -- disabled plugins, environment variables ---------------------------------------------------


def test_disabled_plugin_command_says_so(plugin_dists, capsys, monkeypatch) -> None:
    plugin_dists.add("deepseek-greeter", NEW_STYLE_CLI, entry_name="greeter")
    assert run_cli(capsys, "greet", "you")[:2] == (0, "hi you\n")
    plugins.reset_plugin_manager()
    monkeypatch.setenv("DEEPSEEK_DISABLED_PLUGINS", "greeter")
    status, _, err = run_cli(capsys, "greet", "you")
    assert status == 2
    assert "invalid choice" not in err
    assert "plugin 'greeter' (deepseek-greeter) was disabled" in err


def test_disable_by_distribution_name(plugin_dists, monkeypatch) -> None:
    plugin_dists.add("deepseek-jsonl", JSONL_GOOD, entry_name="jsonl")
    monkeypatch.setenv("DEEPSEEK_DISABLED_PLUGINS", "Deepseek_JSONL")
    records = {r.name: r for r in plugins.plugins()}
    assert records["jsonl"].status == "disabled"
    assert "jsonl_logger" not in registry("callback")


@pytest.mark.parametrize("variable", ["DEEPSEEK_PLUGINS", "DEEPSEEK_DISABLED_PLUGINS"])
def test_unknown_plugin_name_in_a_variable_is_warned_with_did_you_mean(
    plugin_dists, monkeypatch, variable
) -> None:
    plugin_dists.add("deepseek-jsonl", JSONL_GOOD, entry_name="jsonl")
    monkeypatch.setenv(variable, "jsnol")
    with pytest.warns(DeepSeekPluginWarning, match=rf"{variable} names 'jsnol'.*'jsonl'") as w:
        get_plugin_manager()
    assert any(Path(x.filename).name == variable for x in w)


def test_core_cannot_be_disabled(fresh_plugins, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPSEEK_DISABLED_PLUGINS", "core")
    with pytest.warns(DeepSeekPluginWarning, match="core cannot be disabled"):
        records = {r.name: r for r in plugins.plugins()}
    assert records["core"].status == "loaded"
    assert "cpu" in ds.backends.names()
    status, out, _ = run_cli(capsys, "plugins", "--json")
    assert any(r["name"] == "core" for r in json.loads(out))


# -- warnings point at the plugin, printed once -------------------------------------------------


def test_warnings_point_at_the_plugin_not_at_the_manager(plugin_dists) -> None:
    module = plugin_dists.add("deepseek-jsonl", JSONL_TYPO, entry_name="jsonl")
    broken = plugin_dists.add("deepseek-broken", BROKEN, entry_name="broken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_plugin_manager()
    files = {Path(w.filename).parent.name for w in caught if w.category is DeepSeekPluginWarning}
    assert files == {module, broken}, [(w.filename, str(w.message)) for w in caught]
    typo = next(w for w in caught if "deepseek_callback" in str(w.message))
    lines = JSONL_TYPO.splitlines()  # line 1 is the empty first line of the string
    decorator = next(i for i, line in enumerate(lines) if "def deepseek_callback()" in line)
    assert typo.lineno == decorator  # the @hookimpl line just above the def


def test_env_prints_each_plugin_problem_once(plugin_dists) -> None:
    plugin_dists.add("deepseek-jsonl", JSONL_TYPO, entry_name="jsonl")
    result = deepseek(plugin_dists, "env")
    assert result.returncode == 1
    both = result.stdout + result.stderr
    assert both.count("implements 'deepseek_callback'") == 1, both


def test_other_commands_print_discovery_warnings_once(plugin_dists) -> None:
    plugin_dists.add("deepseek-jsonl", JSONL_TYPO, entry_name="jsonl")
    result = deepseek(plugin_dists, "greet-nobody")
    assert result.returncode == 2
    result = deepseek(plugin_dists, "train", "--help")
    assert result.returncode == 0
    assert result.stderr.count("implements 'deepseek_callback'") == 1, result.stderr


# -- CLI commands: listing, overrides, the public CommandParser ----------------------------------


def test_plugins_lists_cli_commands_and_overrides(plugin_dists, capsys) -> None:
    plugin_dists.add("deepseek-greeter", NEW_STYLE_CLI, entry_name="greeter")
    _, out, _ = run_cli(capsys, "plugins")
    assert "commands    greet" in out and "say hi" in out
    assert "[overrides 'core' (deepseek-core)]" in out
    assert "[overridden by 'greeter' (deepseek-greeter)]" in out
    records = {r.name: r for r in plugins.plugins()}
    assert records["greeter"].commands == ["profile", "greet"] or set(
        records["greeter"].commands
    ) == {"greet", "profile"}
    assert run_cli(capsys, "profile", "me")[:2] == (0, "hi me\n")  # the override runs


def test_two_plugins_adding_one_command_is_a_clear_error(plugin_dists, capsys) -> None:
    source = NEW_STYLE_CLI.replace(", override=True", "")
    source = source.replace('add_command("profile"', 'add_command("greet2"')
    plugin_dists.add("deepseek-greeter-a", source, entry_name="greeter_a")
    plugin_dists.add("deepseek-greeter-b", source, entry_name="greeter_b")
    status, _, err = run_cli(capsys, "greet", "x")
    assert status == 1
    assert "command 'greet' is added twice" in err
    assert "deepseek-greeter-a" in err and "deepseek-greeter-b" in err
    status, out, _ = run_cli(capsys, "plugins", "--check", "greeter_a")
    assert status == 1 and "added twice" in out


def test_old_style_cli_hook_still_works_with_a_deprecation_warning() -> None:
    parser = CommandParser()
    with pytest.warns(DeprecationWarning, match="add_command"):
        sub = parser.add_parser("old", help="old style")
    sub.set_defaults(func=lambda args: 0)
    assert parser.names() == ["old"] and isinstance(sub, argparse.ArgumentParser)


def test_cli_hookspec_exposes_no_private_argparse_type() -> None:
    import inspect

    from deepseek.plugins import hookspecs

    signature = str(inspect.signature(hookspecs.deepseek_cli))
    assert "_SubParsersAction" not in signature and "CommandParser" in signature


# -- registration hooks run through pluggy ---------------------------------------------------------


def test_registration_hooks_are_called_through_pluggy(fresh_plugins) -> None:
    called: list[str] = []
    manager = get_plugin_manager()
    undo = manager.add_hookcall_monitoring(
        lambda hook_name, impls, kwargs: called.append(hook_name), lambda *a: None
    )
    try:
        registry("backend").names()
        registry("callback").names()
        from deepseek.cli import collect_commands

        collect_commands()
    finally:
        undo()
    assert {"deepseek_backends", "deepseek_callbacks", "deepseek_cli"} <= set(called)


def test_registry_keeps_pluggys_order(fresh_plugins) -> None:
    class First:
        @hookimpl(tryfirst=True)
        def deepseek_callbacks(self):
            return [CallbackSpec("zz_first", dict, "")]

    class Last:
        @hookimpl(trylast=True)
        def deepseek_callbacks(self):
            return [CallbackSpec("aa_last", dict, "")]

    plugins.register(Last(), name="last")
    plugins.register(First(), name="first")
    order = [spec.name for spec in registry("callback")]
    assert order[0] == "zz_first" and order[-1] == "aa_last", order
    assert registry("callback").names() == sorted(order)  # names() is for display


# -- plugins --check -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (JSONL_GOOD, 0),
        (JSONL_TYPO, 1),
        (BROKEN, 1),
        (CLASH_WITH_CORE.format(override=False), 1),
        (CLASH_WITH_CORE.format(override=True), 0),
        (
            "from deepseek.plugins import CallbackSpec, hookimpl\n"
            "@hookimpl\ndef deepseek_callbacks():\n    return [CallbackSpec('', dict)]\n",
            1,
        ),
    ],
    ids=["good", "misspelled", "import-error", "clash", "override", "malformed"],
)
def test_plugins_check(plugin_dists, capsys, source: str, expected: int) -> None:
    plugin_dists.add("deepseek-candidate", source, entry_name="candidate")
    status, out, _ = run_cli(capsys, "plugins", "--check", "candidate")
    assert status == expected, out
    status_by_dist, out2, _ = run_cli(capsys, "plugins", "--check", "deepseek-candidate")
    assert status_by_dist == expected, out2
    if expected == 0:
        assert "candidate  (deepseek-candidate 1.0.0)  ok" in out


def test_plugins_check_unknown_name(fresh_plugins, capsys) -> None:
    status, _, err = run_cli(capsys, "plugins", "--check", "nosuchplugin")
    assert status == 1 and "no installed plugin or distribution named 'nosuchplugin'" in err


# -- one table of first-party distributions --------------------------------------------------


def test_one_first_party_table_feeds_namespace_manager_and_registry() -> None:
    import importlib

    from deepseek.plugins import first_party, manager
    from deepseek.utils import check_env

    registry_module = importlib.import_module("deepseek.plugins.registry")

    assert first_party.subpackages() == ds.OPTIONAL_SUBPACKAGES
    assert first_party.install_hints() == registry_module.PROVIDED_BY
    assert manager.FIRST_PARTY_DISTRIBUTIONS == first_party.DISTRIBUTIONS
    assert "FIRST_PARTY" not in vars(check_env) or check_env.FIRST_PARTY is first_party.FIRST_PARTY


def test_core_registers_no_sibling_names(fresh_plugins, monkeypatch) -> None:
    from deepseek.plugins import first_party

    sibling_names = {
        name for d in first_party.FIRST_PARTY[1:] for names in d.hints.values() for name in names
    }
    import deepseek.plugins.builtin as builtin

    text = Path(builtin.__file__).read_text(encoding="utf-8")
    assert not [n for n in sibling_names if f'"{n}"' in text]
    core = {r.name: r for r in plugins.plugins()}["core"]
    registered = {name for names in core.registered.values() for name in names}
    assert not registered & sibling_names


def test_conflict_is_on_both_records_and_gone_after_unregister(fresh_plugins) -> None:
    from deepseek.backends.cpu import CPUBackend
    from deepseek.plugins import BackendSpec

    class Twin:
        @hookimpl
        def deepseek_backends(self):
            return [BackendSpec("twin", CPUBackend, "")]

    plugins.register(Twin(), name="left")
    plugins.register(Twin(), name="right")
    records = {r.name: r for r in plugins.plugins()}
    assert not records["left"].ok and not records["right"].ok
    assert any("'twin' is registered twice" in p for p in records["right"].problems)
    plugins.unregister("right")
    records = {r.name: r for r in plugins.plugins()}
    assert records["left"].ok and records["left"].registered == {"backend": ["twin"]}
