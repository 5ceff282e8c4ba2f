"""ddp, fsdp, tp and pipeline through the Trainer on a real 2-process gloo job, each
compared with one process training on the same global batch: same weights after 2 epochs
with gradient accumulation and clipping, and after an exact resume from a checkpoint.

One torchrun job (tests/strategy_worker.py) runs every scenario; FSDP2's gradient
averaging on gloo (pytorch issue 162338: a sum instead of a mean) would show up here as a
mismatch against the single-process reference.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import deepseek as ds
from deepseek.distributed import TORCHRUN_VARS

WORKER = Path(__file__).with_name("strategy_worker.py")
_spec = importlib.util.spec_from_file_location("strategy_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

SCENARIOS = [name for name in worker.STRATEGIES if name != "2d"]  # 2 processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(script: Path, *args: str, nproc: int = 2, timeout: int = 240) -> None:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
        "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()), "--max-restarts", "0", str(script), *args,
    ]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("strategies")
    torchrun(WORKER, str(out), ",".join(SCENARIOS))
    found = torch.load(out / "rank0.pt", weights_only=True)
    out4 = tmp_path_factory.mktemp("strategies4")
    torchrun(WORKER, str(out4), "2d", nproc=4)  # a 2 x 2 (dp, tp) mesh
    found.update(torch.load(out4 / "rank0.pt", weights_only=True))
    found["out"] = out
    return found


def reference(name: str, epochs: int = 2, scale: float | None = None) -> tuple[dict, int]:
    kwargs = worker.trainer_kwargs(name)
    if name in worker.VARIANTS:
        kwargs["loss_fn"] = worker.scaled_mse(scale or worker.VARIANTS[name][1])
    trainer = ds.Trainer(
        worker.make_model(), train_data=worker.make_dataset(), batch_size=worker.GLOBAL_BATCH,
        max_epochs=epochs, **kwargs,
    )  # fmt: skip
    trainer.fit()
    return trainer.model.state_dict(), trainer.global_step


def assert_close(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("name", [*SCENARIOS, "2d"])
def test_strategy_matches_one_process_on_the_global_batch(results: dict, name: str) -> None:
    expected, steps = reference(name)
    assert results[f"{name}/steps"] == steps == 4  # 2 epochs x 4 batches / accumulate 2
    assert_close(results[f"{name}/state"], expected)


@pytest.mark.parametrize("name", [*SCENARIOS, "2d"])
def test_strategy_resumes_exactly_from_a_checkpoint(results: dict, name: str) -> None:
    assert results[f"{name}/resumed_steps"] == 4
    assert_close(results[f"{name}/resumed"], results[f"{name}/state"])


def test_gradient_sum_really_sums(results: dict) -> None:
    average, _ = reference("ddp_sum", scale=1.0)  # the same run, averaged
    summed = results["ddp_sum/state"]
    assert any(not torch.allclose(summed[k], average[k]) for k in average)


# --- sharded checkpoints (torch.distributed.checkpoint) across world sizes ---------------


@pytest.fixture
def alone(monkeypatch: pytest.MonkeyPatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    import deepseek.distributed as ddist

    yield
    if ddist.is_initialized():
        ddist.destroy_process_group()


def one_process(name: str, epochs: int, callbacks=()) -> ds.Trainer:
    strategy, _ = worker.STRATEGIES[name]
    trainer = worker.build(name, strategy, lambda world: 1, 1, epochs)
    trainer.callbacks.extend(callbacks)
    return trainer


def test_sharded_checkpoint_from_2_ranks_resumes_in_one_process(results: dict, alone) -> None:
    checkpoint = results["out"] / "fsdp_sharded-epoch1"
    assert (checkpoint / "sharded" / ".metadata").is_file()
    trainer = one_process("fsdp_sharded", epochs=2)
    trainer.fit(resume=checkpoint)
    assert trainer.global_step == 4
    assert_close(worker.weights(trainer), results["fsdp_sharded/state"])
    trainer.strategy.teardown()


def test_sharded_checkpoint_from_one_process_resumes_on_2_ranks(
    results: dict, alone, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "epoch1"
    trainer = one_process("fsdp_sharded", 2, [worker.SaveAfterFirstEpoch(checkpoint)])
    trainer.fit()
    expected = worker.weights(trainer)
    trainer.strategy.teardown()
    torchrun(WORKER, str(tmp_path), "fsdp_sharded", str(checkpoint))
    resumed = torch.load(tmp_path / "rank0.pt", weights_only=True)
    assert_close(resumed["fsdp_sharded/resumed_from_other_world"], expected)


def test_consolidate_merges_the_shards_into_one_safetensors(results: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    checkpoint = results["out"] / "fsdp_sharded-epoch1"
    out = tmp_path / "model.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "deepseek.cli", "checkpoint", "consolidate", str(checkpoint),
         "--out", str(out)], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    merged = load_file(out)
    expected, _ = reference("fsdp_sharded", epochs=1)
    assert_close(merged, expected)
