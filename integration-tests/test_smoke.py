"""Smoke tests for a full installation (editable in `integration`, wheels in `wheels`):
every distribution imports under the one namespace and registers through its plugin."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import subprocess
import sys

import pytest
import torch

import deepseek as ds
from deepseek.plugins import registry

SUBPACKAGES = ds.OPTIONAL_SUBPACKAGES  # subpackage -> the distribution that ships it


def test_readme_snippet():
    x = ds.tensor([2.0], requires_grad=True)
    y = x**3 + 5 * x
    y.backward()
    assert torch.equal(x.grad, torch.tensor([17.0]))


@pytest.mark.parametrize("sub, dist", sorted(SUBPACKAGES.items()))
def test_every_subpackage_resolves_in_the_namespace(sub, dist):
    module = getattr(ds, sub)
    assert module is importlib.import_module(f"deepseek.{sub}")
    files = importlib.metadata.distribution(dist).files or []
    # The module comes from the distribution that owns it, not from another one.
    assert any(f"deepseek/{sub}/__init__.py" in str(f) for f in files) or any(
        f.name.endswith(".pth") for f in files
    )


def test_only_core_ships_the_namespace_init():
    for dist in set(SUBPACKAGES.values()):
        files = importlib.metadata.distribution(dist).files or []
        assert not any(str(f).replace("\\", "/") == "deepseek/__init__.py" for f in files), dist


def test_every_distribution_registered_its_plugin():
    from deepseek.plugins.first_party import install_hints

    provided = {
        ("backend", "cpu"): "deepseek-core",
        ("callback", "model_checkpoint"): "deepseek-core",
        ("metric", "accuracy"): "deepseek-core",
    }
    # Every name the first-party table promises (for install hints) is really registered
    # by that sibling, through its own plugin.
    for kind, names in install_hints().items():
        for name, dist in names.items():
            provided[(kind, name)] = dist
    for (kind, name), dist in provided.items():
        assert registry(kind).provider(name).distribution == dist, (kind, name)


def test_every_first_party_plugin_passes_the_authors_check():
    # deepseek plugins --check: no import error, misspelled hook, malformed record or clash.
    from deepseek.plugins.first_party import FIRST_PARTY

    result = subprocess.run(
        [sys.executable, "-m", "deepseek.cli", "plugins", "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for dist in FIRST_PARTY:
        assert f"{dist.plugin}  ({dist.distribution} " in result.stdout


def test_cli_lists_all_plugins_and_env_is_clean():
    out = subprocess.run(
        [sys.executable, "-m", "deepseek.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {p["distribution"] for p in json.loads(out.stdout)}
    assert set(SUBPACKAGES.values()) | {"deepseek-core"} <= names
    env = subprocess.run(
        [sys.executable, "-m", "deepseek.utils.check_env", "--json"], capture_output=True, text=True
    )
    assert env.returncode == 0, env.stdout + env.stderr
    report = json.loads(env.stdout)
    assert "deepseek-framework" in report["distributions"] or len(report["distributions"]) >= 6


def test_nn_parallel_exposes_the_ddp_strategy_class():
    from deepseek.distributed import DDPStrategy

    assert ds.nn.parallel.DDPStrategy is DDPStrategy
    assert ds.nn.parallel.strategy_class("ddp") is DDPStrategy
