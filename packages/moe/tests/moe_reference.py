"""Naive reference MoE for the tests: per-token routing and per-expert boolean masks.

Written for clarity, not speed: every expert runs on every token and a boolean mask keeps
the tokens routed to it. It reads the layer's parameters, so gradients compare directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def naive_route(layer, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, experts) of shape (tokens, top_k), one token at a time."""
    router = layer.router
    weights, chosen = [], []
    per_group = router.num_experts // router.n_groups
    for token in tokens:
        logits = (token @ router.gate.weight.T).float()
        scores = logits.softmax(-1) if router.score_func == "softmax" else logits.sigmoid()
        selection = scores.detach() + router.score_bias
        if router.n_groups > 1 and router.topk_groups < router.n_groups:
            group_scores = torch.stack(
                [
                    selection[g * per_group : (g + 1) * per_group]
                    .sort(descending=True)
                    .values[: min(2, per_group)]
                    .sum()
                    for g in range(router.n_groups)
                ]
            )
            keep_groups = group_scores.argsort(descending=True)[: router.topk_groups]
            allowed = torch.zeros(router.num_experts, dtype=torch.bool)
            for g in keep_groups.tolist():
                allowed[g * per_group : (g + 1) * per_group] = True
            selection = selection.masked_fill(~allowed, float("-inf"))
        experts = selection.argsort(descending=True)[: router.top_k]
        w = scores[experts]
        if router.normalize_weights:
            w = w / w.sum()
        weights.append(w * router.routed_scaling_factor)
        chosen.append(experts)
    return torch.stack(weights).to(tokens.dtype), torch.stack(chosen)


def naive_expert(experts, e: int, x: torch.Tensor) -> torch.Tensor:
    hidden = x @ experts.w1[e]
    if experts.b1 is not None:
        hidden = hidden + experts.b1[e]
    hidden = F.silu(hidden) * (x @ experts.w3[e]) if experts.w3 is not None else F.gelu(hidden)
    out = hidden @ experts.w2[e]
    if experts.b2 is not None:
        out = out + experts.b2[e]
    return out


def naive_moe(layer, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(output, dropped assignments). Capacity: slot-major, then token order."""
    tokens = x.reshape(-1, layer.d_model)
    weights, chosen = naive_route(layer, tokens)
    capacity = layer.capacity(tokens.shape[0])
    out = torch.zeros_like(tokens)
    dropped = 0
    for e in range(layer.num_experts):
        expert_out = naive_expert(layer.experts, e, tokens)  # every token, masked below
        served = 0
        for slot in range(layer.top_k):
            mask = chosen[:, slot] == e
            if capacity is not None:
                queue = torch.cumsum(mask.long(), 0) + served
                within = queue <= capacity
                dropped += int((mask & ~within).sum())
                served += int(mask.sum())
                mask = mask & within
            out = out + (mask[:, None] * weights[:, slot : slot + 1]) * expert_out
    if layer.shared_experts is not None:
        out = out + layer.shared_experts(tokens)
    return out.reshape(x.shape), dropped
