"""Worker for the 2-process expert-parallel layer test (spawned; plain torch.distributed)."""

from __future__ import annotations

import copy
import time

import torch
import torch.distributed as dist

from deepseek.moe import MoELayer, shard_experts


def layer_worker(rank: int, world: int, port: int, cases: list[dict]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        for options in cases:  # one process group for all cases: spawning is the slow part
            check_layer(rank, world, options)
        # Both ranks done before either tears gloo down: a rank still in its last
        # collective when the peer closes the connection aborts (std::terminate).
        dist.barrier()
    finally:
        dist.destroy_process_group()
        # gloo's threads still release the last collective's tensors (taking the GIL):
        # let them before the interpreter finalizes, or the process may abort (exit -6).
        time.sleep(0.1)


def check_layer(rank: int, world: int, options: dict) -> None:
    torch.manual_seed(0)
    layer = MoELayer(**options)
    with torch.no_grad():
        layer.router.score_bias.normal_(0, 0.05)
    full = copy.deepcopy(layer)
    tokens_per_rank, d = 24, layer.d_model
    torch.manual_seed(1)
    x_all = torch.randn(world * tokens_per_rank, d)
    probe_all = torch.randn(world * tokens_per_rank, d)
    mine = slice(rank * tokens_per_rank, (rank + 1) * tokens_per_rank)

    # Reference: the unsharded layer. Dropless: on the global batch. With a capacity
    # limit, capacity is per rank's batch, so the reference runs each rank's own batch and
    # the parameter gradients are summed over ranks.
    dropless = layer.capacity_factor is None
    x_ref = (x_all if dropless else x_all[mine]).clone().requires_grad_()
    y_ref = full(x_ref)
    (y_ref * (probe_all if dropless else probe_all[mine])).sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in full.named_parameters()}
    if not dropless:
        for g in ref_grads.values():
            dist.all_reduce(g)
    ref_out = y_ref[mine] if dropless else y_ref
    ref_x_grad = x_ref.grad[mine] if dropless else x_ref.grad

    shard_experts(layer)
    x = x_all[mine].clone().requires_grad_()
    y = layer(x)
    (y * probe_all[mine]).sum().backward()
    torch.testing.assert_close(y, ref_out.detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(x.grad, ref_x_grad, atol=1e-5, rtol=1e-4)
    local = layer.num_local_experts
    for name, p in layer.named_parameters():
        grad = p.grad.clone()
        expected = ref_grads[name]
        if name.startswith("experts."):
            expected = expected[rank * local : (rank + 1) * local]
        else:  # replicated parameters: the data-parallel sum of the local gradients
            dist.all_reduce(grad)
        torch.testing.assert_close(grad, expected, atol=1e-4, rtol=1e-4, msg=name)
    if not dropless:
        full_again = copy.deepcopy(full)
        with torch.no_grad():
            full_again(x_all[mine])
        assert int(layer.dropped_tokens) == int(full_again.dropped_tokens) > 0
