"""The ``expert`` strategy's step and checkpoint state with 2 real gloo processes:
gradient clipping by the global norm over the expert shards (the dense replicas stay
equal and training matches one process), and the expert optimizer state (Adam's moments)
gathered for a checkpoint and split again on load. The workers are in
moe_ep_state_worker.py."""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch.multiprocessing as mp
from moe_ep_state_worker import run
from test_moe_expert_parallel import free_port
from test_moe_expert_parallel import pytestmark as _needs_gloo

pytestmark = [
    _needs_gloo,
    pytest.mark.skipif(
        importlib.util.find_spec("deepseek.distributed") is None,
        reason="the expert strategy needs deepseek-dist (pip install 'deepseek-moe[dist]')",
    ),
]

DEADLINE_S = 120  # the workers' collectives time out after 60 s; this bounds the rest


def spawn_two(check: str) -> None:
    """Run ``moe_ep_state_worker.run(rank, 2, port, check)`` on 2 processes; a rank's
    exception fails the test with its traceback, and nothing outlives the deadline.

    Forked, not spawned: the ranks inherit torch, deepseek and torch._dynamo already
    imported, seconds per rank on a 2-core machine. Safe here as for DataLoader workers:
    the parent holds no process group and runs torch on one thread (conftest.py)."""
    context = mp.start_processes(
        run, args=(2, free_port(), check), nprocs=2, join=False, start_method="fork"
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"the 2-process {check} check did not finish in {DEADLINE_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(5)


def test_clipping_uses_the_global_norm_over_expert_shards():
    """Clipped 2-rank EP SGD == clipped single-process SGD on the global batch, and the
    dense parameters are bitwise equal on both ranks."""
    spawn_two("clipping")


def test_optimizer_state_gathered_for_checkpoint_and_split_on_load():
    """The saved Adam state equals the single-process one; loading it gives each rank its
    own shard back and the resumed step equals the uninterrupted one."""
    spawn_two("optimizer_state")
