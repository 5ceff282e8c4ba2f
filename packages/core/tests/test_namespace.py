"""``import deepseek as ds``: the torch surface is torch's own, the import stays light,
and a subpackage from a distribution that is not installed says what to install."""

from __future__ import annotations

import contextlib
import doctest
import importlib
import importlib.metadata
import importlib.util
import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import deepseek as ds

README = Path(__file__).resolve().parents[3] / "README.md"

# DESIGN.md section 1: optional subpackage -> the distribution that ships it.
OPTIONAL = {
    "distributed": "deepseek-dist",
    "quantization": "deepseek-quant",
    "pruning": "deepseek-quant",
    "distillation": "deepseek-quant",
    "nlp": "deepseek-nlp",
    "vision": "deepseek-vision",
    "moe": "deepseek-moe",
}


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def run_python(code: str, **env_extra: str) -> str:
    env = None
    if env_extra:
        import os

        env = {**os.environ, **env_extra}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- the documented snippet ----------------------------------------------------------------


def test_readme_tour_snippet_runs_verbatim() -> None:
    if not README.exists():
        pytest.skip("no README.md next to the packages (installed from wheels)")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    snippet = next((b for b in blocks if "x ** 3 + 5 * x" in b), None)
    assert snippet is not None, "the README's tour lost its x ** 3 + 5 * x example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, str(README), "exec"), {})  # the README is ours
    assert "tensor([17.])" in out.getvalue()


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(ds, verbose=False, report=False)
    assert result.attempted >= 4 and result.failed == 0


def test_the_gradient_is_torchs() -> None:
    x = ds.tensor([2.0], requires_grad=True)
    y = x**3 + 5 * x
    y.backward()
    assert x.grad is not None and x.grad.item() == 17.0  # d/dx x^3 + 5x = 3x^2 + 5


# -- the torch surface is torch's own ------------------------------------------------------


def test_ds_tensor_is_a_torch_tensor() -> None:
    t = ds.tensor([[1.0, 2.0]])
    assert type(t) is torch.Tensor
    assert ds.Tensor is torch.Tensor and ds.tensor is torch.tensor
    assert ds.float32 is torch.float32 and ds.long is torch.int64
    assert isinstance(ds.zeros(2, 3), torch.Tensor)


def test_nn_and_optim_are_torchs() -> None:
    assert ds.nn.Linear is torch.nn.Linear
    assert ds.nn.Module is torch.nn.Module
    assert ds.nn.functional is torch.nn.functional
    assert ds.optim.AdamW is torch.optim.AdamW
    assert ds.optim.lr_scheduler is torch.optim.lr_scheduler

    ds.manual_seed(0)
    model = ds.nn.Linear(3, 1)
    optimizer = ds.optim.AdamW(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    loss = ds.nn.functional.mse_loss(model(ds.ones(4, 3)), ds.zeros(4, 1))
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.weight)


def test_amp_autocast_bf16_on_cpu() -> None:
    a, b = ds.randn(4, 8), ds.randn(8, 2)
    with ds.amp.autocast("cpu", dtype=torch.bfloat16):
        inside = a @ b
    assert inside.dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32
    assert ds.amp.autocast is torch.amp.autocast and ds.amp.GradScaler is torch.amp.GradScaler


def test_cuda_amp_autocast_constructs_and_disabled_runs_on_cpu() -> None:
    ctx = ds.cuda.amp.autocast(enabled=False)
    assert isinstance(ctx, torch.amp.autocast) and ctx.device == "cuda"
    with ctx:
        out = ds.randn(2, 3) @ ds.randn(3, 2)
    assert out.dtype == torch.float32


def test_cuda_is_available_is_a_bool() -> None:
    available = ds.cuda.is_available()
    assert isinstance(available, bool)
    assert available == torch.cuda.is_available()


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'deepseek' has no attribute 'tensorflow'"):
        ds.tensorflow  # noqa: B018
    assert not hasattr(ds, "tensorflow")


# -- light import --------------------------------------------------------------------------


def test_import_deepseek_imports_no_optional_subpackage_and_no_plugins() -> None:
    out = run_python(
        """
        import json, sys
        import deepseek
        print(json.dumps(sorted(sys.modules)))
        """
    )
    modules = set(json.loads(out))
    heavy = [f"deepseek.{sub}" for sub in (*OPTIONAL, "training", "callbacks")]
    assert not [m for m in heavy if m in modules]
    # Plugin discovery is lazy: neither the manager nor pluggy is imported yet.
    assert "deepseek.plugins" not in modules and "pluggy" not in modules


def test_another_distribution_extends_the_namespace(tmp_path: Path) -> None:
    # What deepseek-moe does: ship only deepseek/moe/, found through extend_path.
    package = tmp_path / "deepseek" / "moe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("MARKER = 'from another distribution'\n")
    out = run_python(
        """
        import deepseek as ds
        print(ds.moe.MARKER)
        """,
        PYTHONPATH=str(tmp_path),
    )
    assert out.strip() == "from another distribution"


# -- optional subpackages ------------------------------------------------------------------


def test_optional_subpackages_are_the_designed_ones() -> None:
    assert ds.OPTIONAL_SUBPACKAGES == OPTIONAL


def test_dir_lists_optional_and_core_subpackages() -> None:
    listed = dir(ds)
    for name in (*OPTIONAL, "nn", "optim", "amp", "cuda", "backends", "plugins", "Trainer"):
        assert name in listed


@pytest.mark.parametrize(("sub", "distribution"), OPTIONAL.items(), ids=list(OPTIONAL))
def test_missing_distribution_names_what_to_install(sub: str, distribution: str) -> None:
    if installed(distribution):
        pytest.skip(f"{distribution} is installed")
    expected = f"deepseek.{sub} needs the {distribution} package: pip install {distribution}"

    with pytest.raises(ImportError) as attribute:
        getattr(ds, sub)
    assert str(attribute.value) == expected

    with pytest.raises(ImportError) as imported:
        importlib.import_module(f"deepseek.{sub}")
    assert str(imported.value) == expected

    with pytest.raises(ImportError) as from_import:
        exec(f"from deepseek import {sub}", {})  # the statement under test
    assert str(from_import.value) == expected

    with pytest.raises(ImportError) as statement:
        exec(f"import deepseek.{sub}", {})
    assert str(statement.value) == expected

    # Tools that probe for a module get the answer importlib documents: None.
    assert importlib.util.find_spec(f"deepseek.{sub}") is None

    assert f"deepseek.{sub}" not in sys.modules
    assert sub not in vars(ds)  # a failure is not cached: installing later works


# -- ds.nn.parallel: torch's parallel wrappers plus registered strategy classes ---------------


def test_nn_parallel_resolves_registered_strategy_classes(fresh_plugins) -> None:
    from deepseek.plugins import StrategySpec, hookimpl, register, unregister
    from deepseek.training.strategy import SingleDeviceStrategy, Strategy

    assert ds.nn.parallel.DistributedDataParallel is torch.nn.parallel.DistributedDataParallel
    assert ds.nn.parallel.strategy_class("single") is SingleDeviceStrategy
    assert ds.nn.parallel.SingleDeviceStrategy is SingleDeviceStrategy

    class RingStrategy(Strategy):
        name = "ring"

    class Plugin:
        @hookimpl
        def deepseek_strategies(self):
            return [StrategySpec("ring", RingStrategy, "a test strategy")]

    register(Plugin(), name="ring-plugin")
    try:
        assert ds.nn.parallel.RingStrategy is RingStrategy
        assert ds.nn.parallel.strategy_classes()["ring"] is RingStrategy
    finally:
        unregister("ring-plugin")
    with pytest.raises(AttributeError, match="registered strategy classes: .*SingleDeviceStrategy"):
        _ = ds.nn.parallel.RingStrategy


def test_seed_everything_and_metrics_are_lazy_top_level_names() -> None:
    code = (
        "import sys, deepseek as ds\n"
        "assert 'deepseek.utils.seed' not in sys.modules\n"
        "assert 'deepseek.metrics' not in sys.modules\n"
        "from deepseek.utils.seed import seed_everything\n"
        "assert ds.seed_everything is seed_everything\n"
        "import deepseek.metrics\n"
        "assert ds.metrics is deepseek.metrics\n"
        "assert 'seed_everything' in dir(ds) and 'metrics' in dir(ds)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_core_metrics_are_registered_by_cores_plugin(fresh_plugins) -> None:
    from deepseek.plugins import MetricSpec, registry

    reg = registry("metric")
    assert reg.provider("accuracy").name == "core"
    assert isinstance(reg.get("accuracy"), MetricSpec)
