"""``deepseek new-plugin``: the generated distribution installs and passes its own tests.

The end-to-end test builds the generated plugin with hatchling into a private target
directory (``pip install --no-deps --no-build-isolation --target``), so the shared
environment never sees it, and runs the generated tests in a subprocess with that
directory on ``PYTHONPATH``: exactly what an author does after ``pip install -e .``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from deepseek.cli import main
from deepseek.cli.new_plugin import KINDS, NewPluginError, generate, parse_kinds

HAS_HATCHLING = importlib.util.find_spec("hatchling") is not None


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        status = main(list(args))
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.skipif(not HAS_HATCHLING, reason="needs hatchling to build the plugin")
def test_generated_plugin_installs_and_passes_its_own_tests(tmp_path, capsys) -> None:
    status, out, _ = run_cli(
        capsys, "new-plugin", "Acme-Tools", "--kind", ",".join(KINDS), "--dir", str(tmp_path)
    )
    assert status == 0, out
    root = tmp_path / "deepseek-acme-tools"
    pyproject = (root / "pyproject.toml").read_text()
    assert 'acme-tools = "deepseek_acme_tools.plugin"' in pyproject
    assert 'build-backend = "hatchling.build"' in pyproject
    plugin = (root / "src/deepseek_acme_tools/plugin.py").read_text()
    assert plugin.count("deferred(") == len(KINDS) - 1  # every kind but cli
    assert not (root / "src/deepseek").exists()  # its own top-level package only

    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPSEEK_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_every_kind_gets_a_stub_documenting_every_hook(tmp_path) -> None:
    from deepseek.callbacks import Callback

    written = generate("jsonl", list(KINDS), tmp_path)
    package = tmp_path / "deepseek-jsonl/src/deepseek_jsonl"
    for kind in KINDS:
        assert package / f"{kind}.py" in written
        compile((package / f"{kind}.py").read_text(), f"{kind}.py", "exec")
    callback = (package / "callback.py").read_text()
    hooks = [name for name in dir(Callback) if name.startswith("on_")]
    assert hooks and all(f"def {hook}(" in callback for hook in hooks)
    yaml_text = (tmp_path / "deepseek-jsonl/examples/jsonl.yaml").read_text()
    import yaml

    config = yaml.safe_load(yaml_text)
    assert config["callbacks"] == [{"name": "jsonl"}] and config["model"]["name"] == "jsonl"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must be lowercase"),
        ("9lives", "must be lowercase"),
        ("has space", "must be lowercase"),
        ("nlp", "first-party"),
        ("deepseek-core".removeprefix("deepseek-"), "first-party"),
    ],
)
def test_bad_names_are_refused(tmp_path, name: str, message: str) -> None:
    with pytest.raises(NewPluginError, match=message):
        generate(name, ["callback"], tmp_path)


def test_unknown_kind_suggests_the_closest() -> None:
    with pytest.raises(NewPluginError, match=r"'calback' \(did you mean 'callback'\?\)"):
        parse_kinds("calback,model")


def test_cli_errors_are_one_line_and_existing_dirs_are_kept(tmp_path, capsys) -> None:
    status, _, err = run_cli(capsys, "new-plugin", "ok", "--kind", "modle", "--dir", str(tmp_path))
    assert status == 2 and err.count("\n") == 1 and "did you mean 'model'" in err
    assert run_cli(capsys, "new-plugin", "ok", "--dir", str(tmp_path))[0] == 0
    marker = tmp_path / "deepseek-ok" / "README.md"
    marker.write_text("mine")
    status, _, err = run_cli(capsys, "new-plugin", "ok", "--dir", str(tmp_path))
    assert status == 2 and "--force" in err
    assert marker.read_text() == "mine"
