"""Expert parallelism: each rank of an expert-parallel group holds ``E / ep`` experts and
tokens travel to their experts with ``all_to_all_single``.

Only ``torch.distributed`` is needed here; the ``expert`` strategy (``strategy.py``) adds
the data-parallel dimension on top of deepseek-dist's DDP strategy.

Per forward of a sharded :class:`~deepseek.moe.layer.MoELayer`:

1. the (token, slot) assignments are sorted by global expert (dropped ones, under a
   capacity limit, get a sentinel that sorts last and are not sent);
2. the per-expert counts are exchanged first (``all_to_all_single`` of ``E`` integers);
3. the split sizes are read on the host (the one synchronisation: ``all_to_all_single``
   takes them as Python ints) and the token rows are exchanged;
4. each rank regroups what it received by local expert, runs its experts as one grouped
   GEMM, undoes the regrouping and sends the rows back with the reverse exchange;
5. the gate weights combine each token's ``top_k`` rows as in the single-process layer.

The exchanges are autograd functions, so backward sends the gradients the same way.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["expert_parallel_dispatch", "expert_parameter_names", "shard_experts"]

_EXPERT_WEIGHTS = ("w1", "w2", "w3", "b1", "b2")


def shard_experts(
    model: nn.Module,
    group: Any = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
) -> list[str]:
    """Keep only this rank's experts in every ``MoELayer`` of ``model`` (in place).

    Rank ``r`` of the expert-parallel ``group`` (default: the whole world) keeps experts
    ``[r * E/ep, (r + 1) * E/ep)``; the router stays whole. ``rank``/``world_size``
    default to the group's. Returns the qualified names of the sharded parameters.
    Raises ``ValueError`` when a layer's expert count is not divisible by the group size.

    >>> import torch
    >>> from deepseek.moe import MoELayer
    >>> layer = MoELayer(8, 16, num_experts=4)
    >>> shard_experts(layer, rank=1, world_size=2)
    ['experts.w1', 'experts.w2', 'experts.b1', 'experts.b2']
    >>> layer.experts.w1.shape, layer.num_local_experts
    (torch.Size([2, 8, 16]), 2)
    """
    from deepseek.moe.balancing import moe_layers

    if world_size is None:
        world_size = dist.get_world_size(group)
    if rank is None:
        rank = dist.get_rank(group)
    layers = moe_layers(model)
    for name, layer in layers:
        if layer.ep_size > 1:
            raise ValueError(f"MoE layer {name or '(root)'} is already sharded")
        if layer.num_experts % world_size:
            raise ValueError(
                f"MoE layer {name or '(root)'} has {layer.num_experts} experts, which is not "
                f"divisible by the expert-parallel world size {world_size}: use an expert "
                "count that is a multiple of it, or a smaller expert_parallel_size"
            )
    names = []
    for name, layer in layers:
        local = layer.num_experts // world_size
        experts = layer.experts
        for attr in _EXPERT_WEIGHTS:
            weight = getattr(experts, attr)
            if weight is None:
                continue
            shard = weight.detach()[rank * local : (rank + 1) * local].clone()
            setattr(experts, attr, nn.Parameter(shard, requires_grad=weight.requires_grad))
            names.append(f"{name}.experts.{attr}" if name else f"experts.{attr}")
        experts.num_experts = local
        layer.ep_group, layer.ep_size, layer.ep_rank = group, world_size, rank
    return names


def expert_parameter_names(model: nn.Module) -> list[str]:
    """Qualified names of the stacked expert weights of every MoE layer."""
    from deepseek.moe.balancing import moe_layers

    names = []
    for name, layer in moe_layers(model):
        for attr in _EXPERT_WEIGHTS:
            if getattr(layer.experts, attr) is not None:
                names.append(f"{name}.experts.{attr}" if name else f"experts.{attr}")
    return names


def expert_parallel_dispatch(layer: Any, tokens: torch.Tensor, route: Any) -> torch.Tensor:
    """The routed output of a sharded layer for this rank's ``tokens`` (see module doc)."""
    from torch.distributed._functional_collectives import all_to_all_single_autograd

    group = layer.ep_group if layer.ep_group is not None else dist.group.WORLD
    ep = layer.ep_size
    num_experts, local = layer.num_experts, layer.num_local_experts
    num_tokens, k = route.experts.shape
    flat = route.experts.reshape(-1)  # token-major
    if layer.capacity_factor is not None:
        from deepseek.moe.layer import capacity_mask

        keep, _, _ = capacity_mask(route.experts, num_experts, layer.capacity(num_tokens))
        keep = keep.view(k, num_tokens).t().reshape(-1)
        flat = torch.where(keep, flat, num_experts)  # dropped: sorts last, never sent
        layer.dropped_tokens = (~keep).sum()
    else:
        layer.dropped_tokens = torch.zeros((), dtype=torch.long, device=tokens.device)
    order = torch.argsort(flat, stable=True)
    from deepseek.moe.layer import expert_counts

    send_counts = expert_counts(flat, num_experts)
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts, group=group)
    splits = torch.cat([send_counts.view(ep, local).sum(1), recv_counts.view(ep, local).sum(1)])
    splits = splits.tolist()  # the host needs the split sizes: the one sync of EP dispatch
    send_splits, recv_splits = splits[:ep], splits[ep:]
    layer.ep_split_sizes = (send_splits, recv_splits)  # rows sent to / received from each rank
    sent = sum(send_splits)
    received = sum(recv_splits)

    send_rows = order[:sent]
    x_send = tokens.index_select(0, send_rows // k)
    x_recv = all_to_all_single_autograd(x_send, recv_splits, send_splits, group)
    # Received rows come grouped by (source rank, local expert): regroup by local expert.
    block_expert = torch.arange(local, device=tokens.device).repeat(ep)
    row_expert = torch.repeat_interleave(block_expert, recv_counts, output_size=received)
    perm = torch.argsort(row_expert, stable=True)
    local_counts = recv_counts.view(ep, local).sum(0)
    y = layer.experts(x_recv.index_select(0, perm), local_counts, row_expert[perm])
    inverse = torch.empty_like(perm).scatter_(0, perm, torch.arange(received, device=perm.device))
    y = y.index_select(0, inverse)
    y_back = all_to_all_single_autograd(y, send_splits, recv_splits, group)
    # Weighted rows straight back to their tokens (dropped assignments were never sent).
    weights = route.weights.reshape(-1).index_select(0, send_rows).to(y_back.dtype)
    out = tokens.new_zeros(num_tokens, y_back.shape[-1])
    return out.index_add(0, send_rows // k, y_back * weights.unsqueeze(1))
