"""The ddp strategy on a real 2-process gloo group launched by torchrun, plus its errors.

One torchrun job (tests/ddp_worker.py) runs every multi-process scenario; the tests
below compare what each rank saved with a single-process reference built here.
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
from torch.nn import functional as F
from torch.utils.data import DataLoader

import deepseek as ds
import deepseek.distributed as ddist
from deepseek.distributed import TORCHRUN_VARS, DDPStrategy
from deepseek.training.strategy import SingleDeviceStrategy

WORKER = Path(__file__).with_name("ddp_worker.py")
_spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--max-restarts", "0",
        str(WORKER), str(out),
    ]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def reference_state(batch_size: int) -> dict[str, torch.Tensor]:
    """One process, full batches (both ranks' samples), same shuffled order."""
    strategy = SingleDeviceStrategy()
    model = worker.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=worker.LR)
    loader = DataLoader(worker.make_dataset(), batch_size=batch_size)
    for x, y in strategy.setup_dataloader(loader, shuffle=True, seed=0):
        F.mse_loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model.state_dict()


def assert_states_close(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6)


# --- the process group ---------------------------------------------------------------


def test_setup_joins_the_group_from_torchrun_env(ranks: list[dict]) -> None:
    for rank, result in enumerate(ranks):
        assert result["world_size"] == 2
        assert result["rank"] == result["torch_rank"] == rank
        assert result["backend"] == "gloo"
        assert result["device"] == "cpu"


def test_teardown_destroys_only_a_group_the_strategy_created(ranks: list[dict]) -> None:
    for result in ranks:
        assert result["alive_after_guest_teardown"] is True
        assert result["alive_after_owner_teardown"] is False


# --- collectives ---------------------------------------------------------------------


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
def test_reduce_combines_every_rank(ranks: list[dict], op: str) -> None:
    inputs = torch.stack([r["reduce_input"] for r in ranks])
    expected = {
        "sum": inputs.sum(0),
        "mean": inputs.mean(0),
        "max": inputs.amax(0),
        "min": inputs.amin(0),
    }[op]
    for result in ranks:
        torch.testing.assert_close(result[f"reduce_{op}"], expected)
        torch.testing.assert_close(result["reduce_input_after"], result["reduce_input"])


def test_reduce_mean_of_integers_is_a_float_mean(ranks: list[dict]) -> None:
    for result in ranks:
        assert result["reduce_int_mean"].is_floating_point()
        assert result["reduce_int_mean"].item() == pytest.approx((1 + 2) / 2)


def test_broadcast_sends_the_source_ranks_object(ranks: list[dict]) -> None:
    for result in ranks:
        assert result["broadcast"] == {"from": 1, "items": [1, 1, 1]}


# --- training ------------------------------------------------------------------------


def test_each_rank_gets_its_own_half_of_the_data(ranks: list[dict]) -> None:
    seen = [set(r["plain"]["indices"].tolist()) for r in ranks]
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(range(len(worker.make_dataset())))


def test_ddp_matches_one_process_on_the_full_batch(ranks: list[dict]) -> None:
    expected = reference_state(batch_size=2 * worker.PER_RANK_BATCH)
    for result in ranks:
        assert_states_close(result["plain_state"], expected)
        assert all(calls > 0 for calls in result["plain"]["calls_boundary"])
    for key in expected:  # DDP keeps the replicas bit-identical
        assert torch.equal(ranks[0]["plain_state"][key], ranks[1]["plain_state"][key])


def test_no_backward_sync_skips_the_all_reduce_while_accumulating(ranks: list[dict]) -> None:
    for result in ranks:
        assert result["accum"]["calls_inside"] == [0, 0]  # no all-reduce inside no_sync
        assert all(calls > 0 for calls in result["accum"]["calls_boundary"])
    # Inside no_sync each rank keeps its own gradient; at the boundary they agree.
    for local0, local1 in zip(ranks[0]["accum"]["grads_inside"], ranks[1]["accum"]["grads_inside"]):
        assert not torch.allclose(local0, local1)
    for synced0, synced1 in zip(
        ranks[0]["accum"]["grads_boundary"], ranks[1]["accum"]["grads_boundary"]
    ):
        assert torch.equal(synced0, synced1)


def test_accumulated_ddp_matches_one_process_on_the_full_batch(ranks: list[dict]) -> None:
    expected = reference_state(batch_size=2 * 2 * worker.PER_RANK_BATCH)  # 2 ranks x 2 micro
    for result in ranks:
        assert_states_close(result["accum_state"], expected)


def test_trainer_with_strategy_ddp_matches_single_process(ranks: list[dict]) -> None:
    reference = ds.Trainer(
        worker.make_model(), torch.optim.SGD, optimizer_kwargs={"lr": worker.LR},
        train_data=worker.make_dataset(), batch_size=2 * 2 * worker.PER_RANK_BATCH,
        loss_fn=F.mse_loss, max_epochs=1, seed=0, enable_progress_bar=False,
        default_root_dir=None,
    )  # fmt: skip
    reference.fit()
    for result in ranks:
        assert result["trainer_steps"] == reference.global_step == 2
        assert_states_close(result["trainer_state"], reference.model.state_dict())


def test_training_step_models_sync_gradients_under_ddp(ranks: list[dict]) -> None:
    reference = ds.Trainer(
        worker.WithTrainingStep(), torch.optim.SGD, optimizer_kwargs={"lr": worker.LR},
        train_data=worker.make_dataset(), batch_size=2 * worker.PER_RANK_BATCH,
        max_epochs=1, seed=0, enable_progress_bar=False, default_root_dir=None,
    )  # fmt: skip
    reference.fit()
    expected = reference.strategy.model_state_dict(reference.model)
    assert_states_close(ranks[0]["training_step_state"], ranks[1]["training_step_state"])
    assert_states_close(ranks[0]["training_step_state"], expected)


# --- errors (no process group needed) ------------------------------------------------


@pytest.fixture
def no_launch_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    assert not ddist.is_initialized()
    return monkeypatch


def test_setup_without_torchrun_env_joins_a_world_of_one(no_launch_env) -> None:
    strategy = DDPStrategy()
    strategy.setup(ds.backends.get("cpu"))
    try:
        assert ddist.is_initialized()
        assert (strategy.world_size, strategy.rank) == (1, 0)
        model = strategy.setup_model(torch.nn.Linear(2, 1))
        assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
    finally:
        strategy.teardown()
    assert not ddist.is_initialized()


def test_missing_error_lists_only_the_missing_variables(no_launch_env) -> None:
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        no_launch_env.setenv(name, value)
    with pytest.raises(RuntimeError, match=r"variable\(s\) MASTER_ADDR, MASTER_PORT not set"):
        ddist.init_process_group("cpu")


def test_bad_launch_values_are_rejected(no_launch_env) -> None:
    env = {
        "RANK": "x",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "1",
    }
    with pytest.raises(ValueError, match="RANK='x' is not an integer"):
        ddist.launch_env(env)
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        ddist.launch_env({**env, "RANK": "2"})


def test_unknown_ddp_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="find_unused_parameters"):
        DDPStrategy(find_unused_params=True)
    assert DDPStrategy(find_unused_parameters=True).ddp_kwargs == {"find_unused_parameters": True}


def test_misuse_without_a_group_gives_clear_errors(no_launch_env) -> None:
    strategy = DDPStrategy()
    with pytest.raises(ValueError, match="use one of sum, mean, max, min"):
        strategy.reduce(torch.ones(2), "prod")
    with pytest.raises(RuntimeError, match="must run before setup_model"):
        strategy.setup_model(torch.nn.Linear(2, 2))
    plain = torch.nn.Linear(2, 2)
    with (
        pytest.raises(TypeError, match="DistributedDataParallel"),
        strategy.no_backward_sync(plain, enabled=True),
    ):
        pass
    # Without a group the collectives are the identity, as for one process.
    value = torch.arange(3.0)
    assert strategy.reduce(value, "sum") is value
    assert strategy.broadcast("x") == "x"
    assert (strategy.world_size, strategy.rank) == (1, 0)


def test_collective_backend_resolution() -> None:
    assert ddist.collective_backend("cpu") == "gloo"
    assert ddist.collective_backend("auto") == ds.backends.get("auto").collective_backend
    assert ddist.collective_backend("GLOO") == "gloo"
    assert ddist.collective_backend(ds.backends.get("cpu")) == "gloo"
