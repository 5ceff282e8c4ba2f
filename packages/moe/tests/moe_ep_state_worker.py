"""Workers for test_moe_expert_parallel_state.py (forked; 2 gloo processes).

Each rank drives ``ExpertParallelStrategy`` the way the Trainer's loop does (setup,
setup_model, backward, ``clip_gradients``, ``optimizer.step``, the optimizer state-dict
hooks) and compares with a single-process reference that it trains itself on the global
batch, so no reference tensors cross processes.
"""

from __future__ import annotations

import copy
import io
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.device_mesh  # imported once, before the fork
from torch import nn

import deepseek as ds
from deepseek.moe import MoELayer
from deepseek.moe.parallel.strategy import ExpertParallelStrategy
from deepseek.nn.wrappers import wrapper_types

# The test forks its ranks from the pytest process, so what is imported here is imported
# once. Registering torch's wrappers imports torch._dynamo, seconds per process otherwise.
wrapper_types()

D_MODEL, TOKENS_PER_RANK, STEPS = 8, 16, 3


class TinyMoE(nn.Module):
    """Two MoE layers (4 experts, width 8) between dense projections."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(D_MODEL, D_MODEL)
        self.moe1 = MoELayer(D_MODEL, 16, num_experts=4, top_k=2)
        self.moe2 = MoELayer(
            D_MODEL, 16, num_experts=4, top_k=2, activation="swiglu", num_shared_experts=1
        )
        self.out = nn.Linear(D_MODEL, D_MODEL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.moe1(h)
        return self.out(h + self.moe2(h))


def run(rank: int, world: int, port: int, check: str) -> None:
    torch.set_num_threads(1)
    # A short timeout: a rank stuck in a collective fails the test instead of hanging it.
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        {"clipping": check_clipping, "optimizer_state": check_optimizer_state}[check](rank, world)
        dist.barrier()  # both ranks done before gloo is torn down (see moe_ep_worker)
    finally:
        dist.destroy_process_group()
        # gloo's threads still release the last collective's tensors (taking the GIL):
        # let them before the interpreter finalizes, or the process may abort (exit -6).
        time.sleep(0.1)


def batches(world: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    n = world * TOKENS_PER_RANK
    return [
        (torch.randn(n, D_MODEL, generator=gen), torch.randn(n, D_MODEL, generator=gen))
        for _ in range(STEPS + 1)
    ]


def build(world: int) -> tuple[ExpertParallelStrategy, nn.Module, nn.Module]:
    """(strategy, the EP model, an unsharded copy with the same initial weights)."""
    torch.manual_seed(0)
    model = TinyMoE()
    reference = copy.deepcopy(model)
    strategy = ExpertParallelStrategy(expert_parallel_size=world)
    strategy.setup(ds.backends.get("cpu"))  # reuses the group created above
    return strategy, strategy.setup_model(model), reference


def step(
    strategy: ExpertParallelStrategy | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    max_norm: float | None,
) -> torch.Tensor | None:
    """One training step; ``strategy=None`` is the single-process reference."""
    nn.functional.mse_loss(model(x), y).backward()
    norm = None
    if max_norm is not None:
        if strategy is None:
            norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        else:
            norm = strategy.clip_gradients(model, max_norm, optimizers=[optimizer])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def dense_names(strategy: ExpertParallelStrategy, model: nn.Module) -> list[str]:
    experts = set(strategy._expert_names)
    return [n for n, _ in strategy.unwrap(model).named_parameters() if n not in experts]


def check_clipping(rank: int, world: int) -> None:
    """EP training with an active clip == single-process training with the same clip."""
    strategy, model, reference = build(world)
    mine = slice(rank * TOKENS_PER_RANK, (rank + 1) * TOKENS_PER_RANK)
    max_norm = 0.05  # far below the gradient norm: every step clips
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for i, (x, y) in enumerate(batches(world)[:STEPS]):
        norm = step(strategy, model, optimizer, x[mine], y[mine], max_norm)
        ref_norm = step(None, reference, ref_optimizer, x, y, max_norm)
        assert ref_norm > 4 * max_norm, f"step {i}: the clip is not active ({ref_norm})"
        torch.testing.assert_close(norm, ref_norm, rtol=1e-4, atol=0, msg=f"norm, step {i}")

    # The dense replicas must stay bitwise equal: one clipping coefficient on every rank.
    inner = dict(strategy.unwrap(model).named_parameters())
    for name in dense_names(strategy, model):
        others = [torch.empty_like(inner[name]) for _ in range(world)]
        dist.all_gather(others, inner[name].detach().contiguous())
        for other_rank, other in enumerate(others):
            assert torch.equal(other, inner[name]), (
                f"{name} differs between rank {rank} and rank {other_rank}"
            )
    # And the whole model (experts gathered) equals the single-process one.
    state = strategy.model_state_dict(model)
    for name, expected in reference.state_dict().items():
        torch.testing.assert_close(state[name], expected, rtol=1e-4, atol=1e-5, msg=name)


def roundtrip(state: dict) -> dict:
    """Through torch.save / torch.load(weights_only=True), as a checkpoint goes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_optimizer_states_equal(actual: dict, expected: dict, exact: bool, what: str) -> None:
    assert actual["param_groups"] == expected["param_groups"], what
    assert sorted(actual["state"]) == sorted(expected["state"]), what
    for index, entry in expected["state"].items():
        got = actual["state"][index]
        assert sorted(got) == sorted(entry), f"{what}: param {index}"
        for key, value in entry.items():
            msg = f"{what}: param {index} {key}"
            assert got[key].shape == value.shape, f"{msg}: {got[key].shape} != {value.shape}"
            if exact:
                assert torch.equal(got[key], value), msg
            else:
                torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-6, msg=msg)


def check_optimizer_state(rank: int, world: int) -> None:
    """Saved EP Adam state == single-process Adam state; loading it on the ranks gives each
    its own shard back, and training continues exactly."""
    strategy, model, reference = build(world)
    mine = slice(rank * TOKENS_PER_RANK, (rank + 1) * TOKENS_PER_RANK)
    data = batches(world)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    ref_optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    for x, y in data[:STEPS]:
        step(strategy, model, optimizer, x[mine], y[mine], None)
        step(None, reference, ref_optimizer, x, y, None)
    live = copy.deepcopy(optimizer.state_dict())  # this rank's shard of the moments

    saved = roundtrip(strategy.optimizer_state_dict(optimizer))
    model_state = roundtrip(strategy.model_state_dict(model))
    assert_optimizer_states_equal(
        saved, ref_optimizer.state_dict(), exact=False, what="saved vs single process"
    )
    # Gathering must not touch the live (sharded) state.
    assert_optimizer_states_equal(optimizer.state_dict(), live, exact=True, what="live state")

    # Resume: a fresh model, strategy and optimizer, loaded from the full checkpoint.
    strategy2, model2, _ = build(world)
    strategy2.load_model_state_dict(model2, model_state)
    optimizer2 = torch.optim.Adam(model2.parameters(), lr=0.01)
    strategy2.load_optimizer_state_dict(optimizer2, saved)
    assert_optimizer_states_equal(optimizer2.state_dict(), live, exact=True, what="loaded")

    x, y = data[STEPS]
    step(strategy, model, optimizer, x[mine], y[mine], None)
    step(strategy2, model2, optimizer2, x[mine], y[mine], None)
    after, resumed = strategy.unwrap(model).state_dict(), strategy2.unwrap(model2).state_dict()
    for name, value in after.items():
        assert torch.equal(resumed[name], value), f"resumed run differs: {name}"
