"""Expert parallelism with 2 real gloo processes: a sharded layer equals the unsharded one
(outputs, input gradients, expert gradients, router gradients)."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from moe_ep_worker import layer_worker

from deepseek.moe import MoELayer, shard_experts

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_backend_available("gloo")), reason="needs gloo"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = [
    {"activation": "swiglu", "num_shared_experts": 1, "top_k": 3},  # dropless
    {"score_func": "sigmoid", "normalize_weights": True, "n_groups": 2, "topk_groups": 1},
    {"capacity_factor": 0.75, "routed_scaling_factor": 2.0},  # drops tokens
    {"num_experts": 8, "activation": "swiglu", "bias": True},  # 4 experts per rank
]


def test_two_process_expert_parallel_layer_equals_single_process():
    cases = [{"d_model": 8, "d_hidden": 16, "num_experts": 4, "top_k": 2, **c} for c in CASES]
    mp.spawn(layer_worker, args=(2, free_port(), cases), nprocs=2, join=True)


def test_experts_not_divisible_by_the_expert_parallel_size():
    layer = MoELayer(8, 16, num_experts=6)
    with pytest.raises(
        ValueError, match="6 experts, which is not divisible by the expert-parallel world size 4"
    ):
        shard_experts(layer, rank=0, world_size=4)
    assert layer.experts.w1.shape[0] == 6  # left untouched
    shard_experts(layer, rank=2, world_size=3)
    with torch.no_grad():
        torch.testing.assert_close(layer.experts.w1.shape, torch.Size([2, 8, 16]))
    with pytest.raises(ValueError, match="already sharded"):
        shard_experts(layer, rank=0, world_size=3)
