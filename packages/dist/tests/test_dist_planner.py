"""The memory planner (meta device) against what 2 real gloo ranks hold after one step."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from deepseek.distributed.planner import plan_memory

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("memory_worker", HERE / "memory_worker.py")
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)
sys.path.insert(0, str(HERE))
from test_dist_strategies import torchrun  # noqa: E402


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("memory")
    torchrun(HERE / "memory_worker.py", str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp"])
def test_plan_is_within_15_percent_of_the_measured_memory(
    measured: list[dict], strategy: str
) -> None:
    plan = plan_memory(worker.make_model, strategies=[strategy], world_size=2,
                       batch_size=worker.BATCH, input_shape=(32,))[strategy]  # fmt: skip
    for rank in measured:
        real = rank[strategy]
        for part in ("params", "grads", "optimizer", "activations"):
            estimate = getattr(plan, part)
            assert abs(estimate - real[part]) <= 0.15 * real[part], (strategy, part, estimate, real)


def test_fsdp_halves_the_state_of_each_rank(measured: list[dict]) -> None:
    for rank in measured:
        state = {s: rank[s]["params"] + rank[s]["grads"] + rank[s]["optimizer"] for s in rank}
        assert state["fsdp"] <= 0.55 * state["single"]


def test_checkpointing_lowers_the_activation_estimate() -> None:
    plan = plan_memory(worker.make_model, strategies=["single"], batch_size=64,
                       input_shape=(32,))["single"]  # fmt: skip
    assert plan.activations_checkpointed < plan.activations


def test_plan_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown strategies"):
        plan_memory(worker.make_model, strategies=["zero3"], input_shape=(32,))
    with pytest.raises(ValueError, match="pass input_shape"):
        plan_memory(lambda: torch.nn.Conv2d(1, 2, 3), strategies=["single"])
