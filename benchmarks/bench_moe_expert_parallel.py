"""Expert parallelism: MoE layer forward+backward tokens/s with 2 gloo processes (experts
sharded, all_to_all dispatch) vs 1 process at the same global batch, and the bytes each
rank exchanges per step (issue 10).

    python benchmarks/bench_moe_expert_parallel.py           # 32 experts, d 512, 8192 tokens
    python benchmarks/bench_moe_expert_parallel.py --quick   # 16 experts, d 128, 2048 tokens

Each process uses one thread, so 2 processes use the machine's 2 cores.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepseek.moe import MoELayer, shard_experts


def build(args) -> MoELayer:
    torch.manual_seed(0)
    return MoELayer(
        args.d_model,
        args.width,
        args.experts,
        args.top_k,
        activation="swiglu",
        score_func="sigmoid",
        normalize_weights=True,
    )


def timed_steps(layer: MoELayer, x: torch.Tensor, repeats: int) -> float:
    probe = torch.randn_like(x)
    best = float("inf")
    for i in range(repeats + 1):
        layer.zero_grad(set_to_none=True)
        if dist.is_initialized():
            dist.barrier()
        start = time.perf_counter()
        (layer(x.requires_grad_()) * probe).sum().backward()
        elapsed = time.perf_counter() - start
        if dist.is_initialized():  # the step ends when the slowest rank ends
            t = torch.tensor([elapsed])
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            elapsed = float(t)
        if i:
            best = min(best, elapsed)
    return best


def worker(rank: int, world: int, port: int, args, queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    layer = build(args)
    shard_experts(layer)
    torch.manual_seed(1 + rank)
    x = torch.randn(args.tokens // world, args.d_model)
    seconds = timed_steps(layer, x, args.repeats)
    send, _ = layer.ep_split_sizes
    rows_to_others = sum(n for r, n in enumerate(send) if r != rank)
    # Forward: tokens out and results back; backward: the same two exchanges for gradients.
    row_bytes = args.d_model * x.element_size()
    exchanged = 4 * rows_to_others * row_bytes + 2 * args.experts * 8  # + the counts
    if rank == 0:
        queue.put((seconds, exchanged))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.d_model, args.width, args.experts, args.top_k, args.tokens = 128, 64, 16, 2, 2048
    else:
        args.d_model, args.width, args.experts, args.top_k, args.tokens = 512, 256, 32, 4, 8192

    torch.set_num_threads(1)
    torch.manual_seed(1)
    single = timed_steps(build(args), torch.randn(args.tokens, args.d_model), args.repeats)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(worker, args=(2, port, args, queue), nprocs=2, join=True)
    ep_seconds, exchanged = queue.get()

    print(
        f"\nExpert parallelism, MoE layer fwd+bwd: {args.experts} experts of width {args.width}, "
        f"top-{args.top_k}, d_model {args.d_model}, global batch {args.tokens} tokens, fp32, "
        "gloo on CPU, 1 thread per process\n"
    )
    print("| setup | tokens/s | speed-up | bytes sent to other ranks per step (per rank) |")
    print("|---|---|---|---|")
    print(f"| 1 process, all experts | {args.tokens / single:,.0f} | 1.00x | 0 |")
    print(
        f"| 2 processes, experts sharded 2-way | {args.tokens / ep_seconds:,.0f} | "
        f"{single / ep_seconds:.2f}x | {exchanged / 1e6:.1f} MB |"
    )


if __name__ == "__main__":
    main()
