"""A real job with the third-party plugins installed, next to a deliberately broken one.

The broken distribution, ``deepseek-broken-example``, is built here as a real wheel and
installed with ``pip install --no-deps --target``; it declares two ``deepseek`` entry
points: ``broken_import`` raises on import, ``misspelled_hook`` implements
``deepseek_callbaks`` (sic). The job is ``examples/quickstart.yaml`` (one short epoch)
with deepseek-tensorboard's ``tensorboard`` callback and deepseek-lora's ``lora``
algorithm named in the config.

- With everything autoloaded, the job trains, uses both plugins and is *warned* about
  the broken one (its name, its distribution and the cause), not crashed by it.
- ``deepseek plugins`` lists the broken plugin as failed and the misspelled one as partial.
- ``DEEPSEEK_DISABLED_PLUGINS=deepseek-broken-example`` silences it: same job, no warning.
- ``DEEPSEEK_STRICT_PLUGINS=1`` turns the warning into an error that names it.
- ``DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD=1`` loads the first-party plugins only: the job
  without the plugins' parts runs (no warning, no TensorBoard files), and the job that
  names ``tensorboard`` fails with one error saying that autoload disabled it.

When deepseek-lora / deepseek-tensorboard are not installed in this environment, they are
built from plugins/*/ the same way as the broken one and installed next to it.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _launch  # noqa: E402

BROKEN = "deepseek-broken-example"
BOOM = "deepseek_broken.boom: the licence server is unreachable"
BROKEN_SOURCES = {
    "deepseek_broken/__init__.py": '"""A DeepSeek plugin that is broken on purpose."""\n',
    "deepseek_broken/boom.py": f"raise RuntimeError({BOOM!r})\n",
    "deepseek_broken/misspelled.py": (
        "from deepseek.plugins import CallbackSpec, hookimpl\n\n\n"
        "@hookimpl\n"
        "def deepseek_callbaks():  # sic: the spec is deepseek_callbacks\n"
        "    return [CallbackSpec('never_registered', object, 'unreachable')]\n"
    ),
}
BROKEN_ENTRY_POINTS = {
    "broken_import": "deepseek_broken.boom",
    "misspelled_hook": "deepseek_broken.misspelled",
}
QUICKSTART = _launch.ROOT / "examples" / "quickstart.yaml"


def build_wheel(
    folder: Path, name: str, version: str, files: dict[str, bytes], entry_points: dict[str, str]
) -> Path:
    """A pure-Python wheel (PEP 427) holding ``files`` and ``deepseek`` entry points."""
    stem = f"{name.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Dist: deepseek-core\n"
    ).encode()
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: integration-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    contents[f"{info}/entry_points.txt"] = f"[deepseek]\n{lines}".encode()
    record = []
    for path, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return wheel


def plugin_wheel(folder: Path, source: Path) -> Path:
    """A wheel of one of plugins/*/, from its pyproject.toml (name, version, entry
    points) and its package folder."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    files = {}
    for package in (source / "src").iterdir():
        for path in package.rglob("*.py"):
            files[str(path.relative_to(source / "src"))] = path.read_bytes()
    return build_wheel(folder, project["name"], project["version"], files,
                       project["entry-points"]["deepseek"])  # fmt: skip


def install(wheel: Path, target: Path) -> None:
    """``pip install --no-deps --target``; unpacked by hand where pip is absent (a pure
    wheel's installation is its unpacking)."""
    if importlib.util.find_spec("pip") is None:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(target)
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
           "--disable-pip-version-check", "--target", str(target), str(wheel)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder with the broken distribution (and the plugins this environment lacks)
    installed, for ``PYTHONPATH``."""
    pytest.importorskip("tensorboard")  # deepseek-tensorboard's dependency
    pytest.importorskip("sklearn")  # the quickstart's digits
    root = tmp_path_factory.mktemp("plugins")
    target = root / "site"
    files = {k: v.encode() for k, v in BROKEN_SOURCES.items()}
    install(build_wheel(root, BROKEN, "0.1.0", files, BROKEN_ENTRY_POINTS), target)
    for dist, src in _launch.PLUGIN_SOURCES.items():
        if not _launch.installed(dist):
            install(plugin_wheel(root, src.parent), target)
    assert (target / "deepseek_broken_example-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def job(out: Path, *, plugins: bool) -> list[str]:
    """``deepseek train examples/quickstart.yaml`` shrunk to 12 steps; with ``plugins``
    it logs to TensorBoard and trains LoRA adapters on the classifier head."""
    callbacks = [
        "{name: csv_logger, log_every_n_steps: 4}",
        "{name: model_checkpoint, save_freq: epoch, save_last: true}",
    ]
    algorithms = []
    if plugins:
        callbacks.append(f"{{name: tensorboard, log_dir: {out / 'tb'}, log_every_n_steps: 2}}")
        algorithms.append("{name: lora, rank: 4, alpha: 8, target_modules: [head.2]}")
    overrides = {
        "output_dir": out,
        "trainer.max_epochs": 1,
        "trainer.max_steps": 12,
        "trainer.enable_progress_bar": "false",
        "callbacks": f"[{', '.join(callbacks)}]",
        "algorithms": f"[{', '.join(algorithms)}]",
    }
    cmd = _launch.deepseek_cli("train", QUICKSTART)
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def run(cmd: list[str], site: Path, **env: str) -> subprocess.CompletedProcess:
    return _launch.run(cmd, env=_launch.clean_env(pythonpath=[site], **env), timeout=240)


def plugin_warnings(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if "DeepSeekPluginWarning" in line]


def test_broken_plugin_is_warned_about_and_the_job_runs_with_the_others(site, tmp_path):
    out = tmp_path / "run"
    result = run(job(out, plugins=True), site)
    assert result.returncode == 0, _launch.failure(result)
    warned = "\n".join(plugin_warnings(result))
    assert "'broken_import'" in warned and BROKEN in warned, result.stderr[-3000:]
    assert BOOM in warned and "RuntimeError" in warned
    assert "'deepseek_callbaks'" in warned and "did you mean 'deepseek_callbacks'" in warned
    assert "Traceback" not in result.stderr
    # Both third-party plugins did their part.
    assert list((out / "tb").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    from safetensors.torch import load_file

    (last,) = [p for p in (out / "checkpoints").rglob("last") if p.is_dir()] or [
        p for p in out.rglob("last") if p.is_dir()
    ]
    keys = load_file(str(last / "model.safetensors")).keys()
    assert {"head.2.lora_A", "head.2.lora_B"} <= set(keys)


def test_plugins_command_lists_the_broken_plugin_and_why(site):
    result = run(_launch.deepseek_cli("plugins", "--json"), site)
    assert result.returncode == 1, _launch.failure(result)  # 1: some plugin has problems
    by_name = {r["name"]: r for r in json.loads(result.stdout)}
    assert by_name["broken_import"]["status"] == "failed"
    assert BOOM in json.dumps(by_name["broken_import"])
    assert by_name["misspelled_hook"]["status"] == "partial"
    for name in ("lora", "tensorboard"):
        assert by_name[name]["status"] == "loaded", by_name[name]


def test_disabling_the_broken_plugin_silences_it(site, tmp_path):
    result = run(job(tmp_path / "run", plugins=True), site, DEEPSEEK_DISABLED_PLUGINS=BROKEN)
    assert result.returncode == 0, _launch.failure(result)
    assert plugin_warnings(result) == []


def test_strict_mode_makes_the_broken_plugin_an_error(site, tmp_path):
    result = run(job(tmp_path / "run", plugins=True), site, DEEPSEEK_STRICT_PLUGINS="1")
    assert result.returncode != 0
    assert "broken_import" in result.stderr and BOOM in result.stderr
    assert not (tmp_path / "run" / "tb").exists()  # it stopped before training


def test_autoload_disabled_runs_the_job_without_any_third_party_plugin(site, tmp_path):
    off = {"DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = tmp_path / "plain"
    result = run(job(out, plugins=False), site, **off)
    assert result.returncode == 0, _launch.failure(result)
    assert plugin_warnings(result) == []  # the broken plugin was never imported
    assert (out / "metrics.csv").is_file() and not (out / "tb").exists()

    # The job that needs a third-party plugin says which one autoload left out.
    result = run(job(tmp_path / "with_plugins", plugins=True), site, **off)
    assert result.returncode != 0
    (error,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert "unknown callback 'tensorboard'" in error, error
    assert (
        "plugin 'tensorboard' (deepseek-tensorboard), which was disabled: disabled by "
        "DEEPSEEK_DISABLE_PLUGIN_AUTOLOAD" in error
    ), error
