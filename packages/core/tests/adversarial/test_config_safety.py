"""A job config is code: where its modules come from, what --safe refuses, and YAML that
tries to exhaust memory or smuggle types (issue 12, items 3, 7 and 8)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deepseek.cli import main
from deepseek.config import ConfigError, import_target, load_config, parse_config
from deepseek.config.yaml_io import MAX_EXPANDED_NODES, loads

TINY = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    def model():
        return nn.Linear(4, 2)

    def data(n=16):
        x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
        return TensorDataset(x, (x.sum(1) > 0).long())
    """
)


def write_job(folder: Path, out: Path, *, plot: bool = False, module: str = "tinysafe") -> Path:
    (folder / f"{module}.py").write_text(TINY)
    config = folder / "job.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            output_dir: {out}
            plot: {str(plot).lower()}
            model: "{module}:model"
            data: {{train: "{module}:data", batch_size: 8}}
            trainer: {{max_epochs: 1, loss: cross_entropy, enable_progress_bar: false}}
            """
        )
    )
    return config


def test_module_next_to_config_cannot_shadow_an_installed_one(tmp_path):
    """A matplotlib.py beside the YAML must not run when the job plots (it used to go first
    on sys.path)."""
    marker = tmp_path / "pwned"
    (tmp_path / "matplotlib.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit('shadowed')\n"
    )
    config = write_job(tmp_path, tmp_path / "out", plot=True)
    result = subprocess.run(
        [sys.executable, "-m", "deepseek.cli", "train", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path.parent,
    )
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000


def test_config_folder_is_searched_first_by_file_location_then_cwd(tmp_path, monkeypatch):
    here, there = tmp_path / "cfg", tmp_path / "cwd"
    here.mkdir()
    there.mkdir()
    (here / "lookup_a.py").write_text("WHERE = 'config folder'\n")
    (there / "lookup_a.py").write_text("WHERE = 'cwd'\n")
    (there / "lookup_b.py").write_text("WHERE = 'cwd'\n")
    monkeypatch.chdir(there)
    length = len(sys.path)
    assert import_target("lookup_a:WHERE", "x", config_dir=here) == "config folder"
    assert import_target("lookup_b:WHERE", "x", config_dir=here) == "cwd"
    # the folder is appended (for the module's own sibling imports), never put first
    assert str(here.resolve()) not in sys.path[:length]


def test_missing_module_error_lists_the_searched_places(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cfg"
    folder.mkdir()
    with pytest.raises(ConfigError) as info:
        import_target("no_such_module_xyz:f", "model.name", config_dir=folder)
    message = str(info.value)
    assert message.startswith("model.name: cannot find module 'no_such_module_xyz'")
    assert str(folder.resolve()) in message and str(tmp_path.resolve()) in message
    assert "installed packages" in message


def test_same_name_as_installed_module_loads_privately(tmp_path):
    """A config may name its own json.py; the stdlib json stays the real one."""
    import json

    (tmp_path / "json.py").write_text("def model():\n    return 'mine'\n")
    fn = import_target("json:model", "model.name", config_dir=tmp_path)
    assert fn() == "mine"
    assert sys.modules["json"] is json and hasattr(json, "dumps")


@pytest.mark.parametrize(
    "target", ["os:system", "subprocess:getoutput", "builtins:exec", "shutil:rmtree"]
)
def test_safe_mode_refuses_targets_outside_torch_deepseek_and_the_folder(tmp_path, target):
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(
        f"model: {{name: '{target}', command: 'touch {marker}'}}\n"
        "data: {train: 'torch.nn:Linear'}\n"
    )
    with pytest.raises(ConfigError, match=rf"model.name: '{target}' is refused in safe mode"):
        load_config(config, safe=True)
    assert not marker.exists()


def test_safe_mode_refuses_in_every_section(tmp_path):
    for section in (
        "optimizer: {name: 'os:system'}",
        "trainer: {loss: 'subprocess:getoutput'}",
        "trainer: {metrics: ['os:system']}",
        "callbacks: [{name: 'os:system'}]",
        "algorithms: [{name: 'os:system'}]",
    ):
        config = tmp_path / "evil.yaml"
        config.write_text(f"model: torch.nn:Identity\ndata: {{train: 'a:b'}}\n{section}\n")
        with pytest.raises(ConfigError, match="refused in safe mode"):
            load_config(config, safe=True)


def test_safe_cli_is_one_line_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(
        f"model: {{name: 'os:system', command: 'touch {marker}'}}\ndata: {{train: 'x:y'}}\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    assert main(["train", str(config), "--safe"]) == 2
    err = capsys.readouterr().err
    assert "refused in safe mode" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2  # the error + the --traceback hint
    assert not marker.exists()


def test_safe_mode_allows_torch_deepseek_registry_names_and_own_folder(tmp_path):
    config = write_job(tmp_path, tmp_path / "out")
    text = config.read_text().replace(
        "trainer:",
        "optimizer: {name: SGD, lr: 0.1}\n"
        "scheduler: {name: 'torch.optim.lr_scheduler:StepLR', step_size: 1}\ntrainer:",
    )
    config.write_text(text)
    cfg = load_config(config, safe=True)
    from deepseek.training.job import build_trainer

    trainer = build_trainer(cfg)
    assert isinstance(trainer.unwrapped_model, __import__("torch").nn.Linear)


def test_safe_mode_does_not_take_modules_from_the_working_directory(tmp_path, monkeypatch):
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (tmp_path / "cwdmod.py").write_text("def model():\n    raise SystemExit('ran')\n")
    monkeypatch.chdir(tmp_path)
    config = cfg_dir / "job.yaml"
    config.write_text("model: 'cwdmod:model'\ndata: {train: 'cwdmod:model'}\n")
    with pytest.raises(ConfigError, match="refused in safe mode"):
        load_config(config, safe=True)


# -- YAML -----------------------------------------------------------------------------------

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_alias_bomb_is_rejected_before_any_copy(tmp_path):
    assert len(BOMB) < 500  # ~10^9 values once expanded
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB + "model: m:f\ndata: {train: d:f}\n")
    with pytest.raises(ConfigError, match="alias bomb") as info:
        load_config(config, ["trainer.max_epochs=1"])
    assert str(config) in str(info.value)
    with pytest.raises(ConfigError, match="alias bomb"):
        parse_config(loads_unchecked(BOMB))  # the Python API is bounded as well


def loads_unchecked(text: str):
    import yaml

    return yaml.safe_load(text)


def test_merge_key_bomb_is_rejected():
    lines = ["a0: &a0 {k0: 1, k1: 2}"]
    for i in range(1, 40):
        lines.append(f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], x{i}: 1}}")
    with pytest.raises(ConfigError, match="alias"):
        loads("\n".join(lines))


def test_self_referencing_alias_is_an_error_not_a_hang():
    with pytest.raises(ConfigError, match="cycle"):
        loads("a: &a [1, *a]")


def test_ordinary_aliases_within_the_limit_still_work():
    data = loads("base: &base {lr: 1e-3, betas: [0.9, 0.99]}\nother: *base\n")
    assert data["other"] == {"lr": 0.001, "betas": [0.9, 0.99]}
    assert MAX_EXPANDED_NODES >= 10_000


@pytest.mark.parametrize(
    "text, expected",
    [
        ('tag: "1e5"', "1e5"),
        ("tag: '1e5'", "1e5"),
        ("tag: 1e5", 100000.0),
        ("tag: 1e-3", 0.001),
        ("tag: -2.5E+2", -250.0),
        ("tag: 1_000", 1000),
        ("tag: v1e5", "v1e5"),
    ],
)
def test_only_plain_scalars_become_floats(text, expected):
    value = loads(text)["tag"]
    assert value == expected and type(value) is type(expected)


def test_quoted_string_reaches_the_model_as_a_string(tmp_path):
    (tmp_path / "tagged.py").write_text(
        TINY + "\n"
        "def model(tag):\n"
        "    assert isinstance(tag, str), type(tag)\n"
        "    m = torch.nn.Linear(4, 2)\n"
        "    m.tag = tag\n"
        "    return m\n"
    )
    config = tmp_path / "job.yaml"
    config.write_text(
        f'output_dir: {tmp_path / "out"}\nmodel: {{name: "tagged:model", tag: "1e5"}}\n'
        'data: {train: "tagged:data"}\ntrainer: {max_epochs: 1, loss: cross_entropy}\n'
    )
    from deepseek.training.job import build_trainer

    assert build_trainer(load_config(config)).unwrapped_model.tag == "1e5"
    # and from the command line: --set model.tag='"1e5"' keeps the quotes' meaning
    cfg = load_config(config, ['model.tag="2e5"'])
    assert cfg.model.kwargs["tag"] == "2e5"


def test_docs_say_a_config_is_code():
    import deepseek.config

    doc = deepseek.config.__doc__
    assert "A job config is code" in doc and "safe=True" in doc
    readme = Path(__file__).resolve().parents[2] / "README.md"
    if readme.exists():
        assert "--safe" in readme.read_text()


def test_no_yaml_python_tags(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        loads("model: !!python/object/apply:os.system ['true']")
    assert os.path.exists(tmp_path)


def test_a_config_module_can_import_its_siblings(tmp_path):
    """The folder is appended to sys.path, so the user's module may import its helpers."""
    (tmp_path / "sibling_helpers_q.py").write_text("WIDTH = 5\n")
    (tmp_path / "sibling_model_q.py").write_text(
        "import torch\nfrom sibling_helpers_q import WIDTH\n"
        "def model():\n    return torch.nn.Linear(4, WIDTH)\n"
    )
    factory = import_target("sibling_model_q:model", "model.name", config_dir=tmp_path)
    assert factory().out_features == 5
