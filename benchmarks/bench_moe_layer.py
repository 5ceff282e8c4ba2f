"""MoE layer forward+backward throughput: grouped-GEMM dispatch vs the naive per-expert
mask loop, the previous index-select loop, and a dense SwiGLU FFN with the same activated
parameters per token (issue 10).

    python benchmarks/bench_moe_layer.py          # 64 x 256 experts, top-6, 2 shared, d 1024
    python benchmarks/bench_moe_layer.py --quick    # a smaller layer, a few seconds

Prints a markdown table; ratios are against the new MoELayer measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from deepseek.moe import MoELayer
from deepseek.moe.experts import FeedForward


def naive_mask_loop(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """The textbook loop (as in many reference MoE implementations): for each expert, a
    boolean mask of its tokens, gather, compute, scatter-add."""
    route = layer.router(x)
    out = torch.zeros_like(x)
    w = layer.experts
    for e in range(layer.num_experts):
        hit = route.experts == e  # (tokens, top_k)
        rows = hit.any(dim=-1)
        if not rows.any():
            continue
        xe = x[rows]
        ye = (F.silu(xe @ w.w1[e]) * (xe @ w.w3[e])) @ w.w2[e]
        gate = (route.weights * hit).sum(dim=-1)[rows]
        out[rows] += ye * gate[:, None]
    return out + layer.shared_experts(x)


class IndexSelectMoE(nn.Module):
    """The previous MoELayer's dispatch: one nn.Module per expert, index_select /
    index_add_ per expert, split by host-read counts (SwiGLU experts here, same FLOPs)."""

    def __init__(self, layer: MoELayer) -> None:
        super().__init__()
        self.layer = layer
        self.experts = nn.ModuleList(
            FeedForward(layer.d_model, layer.d_hidden, "swiglu") for _ in range(layer.num_experts)
        )
        with torch.no_grad():
            for e, expert in enumerate(self.experts):
                expert.w1.weight.copy_(layer.experts.w1[e].t())
                expert.w3.weight.copy_(layer.experts.w3[e].t())
                expert.w2.weight.copy_(layer.experts.w2[e].t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = self.layer.router(x)
        k = route.experts.shape[1]
        expert_ids = route.experts.t().reshape(-1)
        token_ids = torch.arange(x.shape[0]).repeat(k)
        gates = route.weights.t().reshape(-1)
        order = torch.argsort(expert_ids, stable=True)
        counts = torch.bincount(expert_ids, minlength=len(self.experts)).tolist()
        out = torch.zeros_like(x)
        for expert, ids, gate in zip(
            self.experts, token_ids[order].split(counts), gates[order].split(counts)
        ):
            if ids.numel():
                out.index_add_(0, ids, expert(x.index_select(0, ids)) * gate[:, None])
        return out + self.layer.shared_experts(x)


def step_seconds(fn, x: torch.Tensor, probe: torch.Tensor, params: list) -> float:
    for p in params:
        p.grad = None
    xi = x.detach().requires_grad_()
    start = time.perf_counter()
    (fn(xi) * probe).sum().backward()
    return time.perf_counter() - start


def interleaved_tokens_per_second(rows, x: torch.Tensor, repeats: int) -> list[float]:
    """Best of ``repeats`` timed steps each, taken round-robin (one step of every
    implementation per round) so that a change in machine load hits all of them."""
    probe = torch.randn_like(x)
    best = [float("inf")] * len(rows)
    for round_ in range(repeats + 1):
        for i, (_, fn, params) in enumerate(rows):
            seconds = step_seconds(fn, x, probe, params)
            if round_:  # round 0 warms up
                best[i] = min(best[i], seconds)
    return [x.shape[0] / s for s in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        d_model, width, experts, top_k, shared, tokens = 256, 64, 16, 4, 2, 1024
    else:
        d_model, width, experts, top_k, shared, tokens = 1024, 256, 64, 6, 2, 4096
    torch.manual_seed(0)
    layer = MoELayer(
        d_model,
        width,
        experts,
        top_k,
        num_shared_experts=shared,
        activation="swiglu",
        score_func="sigmoid",
        normalize_weights=True,
    )
    old = IndexSelectMoE(layer)
    dense = FeedForward(d_model, (top_k + shared) * width, "swiglu")
    x = torch.randn(tokens, d_model)

    rows = [
        ("MoELayer (sorted grouped GEMM)", layer, list(layer.parameters())),
        (
            "naive per-expert mask loop",
            lambda t: naive_mask_loop(layer, t),
            list(layer.parameters()),
        ),
        ("previous index-select loop", old, list(old.parameters())),
        (f"dense SwiGLU FFN, hidden {(top_k + shared) * width}", dense, list(dense.parameters())),
    ]
    speeds = interleaved_tokens_per_second(rows, x, args.repeats)
    results = [(name, tps) for (name, _, _), tps in zip(rows, speeds)]
    ours = results[0][1]
    print(
        f"\nMoE layer fwd+bwd, fp32 CPU, {torch.get_num_threads()} thread(s): {experts} routed "
        f"experts of width {width}, top-{top_k}, {shared} shared, d_model {d_model}, "
        f"{tokens} tokens, "
        f"torch._grouped_mm: {hasattr(torch, '_grouped_mm')}\n"
    )
    print("| implementation | tokens/s | MoELayer speed-up vs it |")
    print("|---|---|---|")
    for name, tps in results:
        print(f"| {name} | {tps:,.0f} | {ours / tps:.2f}x |")


if __name__ == "__main__":
    main()
