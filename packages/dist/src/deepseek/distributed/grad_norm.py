"""The global gradient norm when parameters are DTensors (fsdp, tp, 2d) or split over
pipeline stages, and clipping by it.

``torch.nn.utils.clip_grad_norm_`` handles one kind of tensor at a time; a tensor-parallel
model mixes DTensor gradients (sharded or replicated over a mesh) with plain ones, and a
pipeline stage holds only part of the model. Here each group of gradients sharing a mesh
and placements is normed by torch (``get_total_norm``, a DTensor op), made whole with
``full_tensor()``, and the groups' squares are added; a pipeline stage's partial sum is
then all-reduced over the stages.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def total_grad_norm(
    parameters: Iterable[torch.nn.Parameter], group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """The 2-norm of all gradients (a plain float32 0-d tensor, the same on every rank).

    ``group``: ranks that each hold a *different* part of the parameters (pipeline stages);
    their squared norms are summed. None: every rank holds (shards of) all of them.
    """
    groups: dict[tuple, list[torch.Tensor]] = {}
    for p in parameters:
        if p.grad is None:
            continue
        g = p.grad
        key = (g.device_mesh, tuple(g.placements)) if isinstance(g, DTensor) else (g.device,)
        groups.setdefault(key, []).append(g)
    squares = torch.zeros((), dtype=torch.float32)
    for grads in groups.values():
        norm = torch.nn.utils.get_total_norm(grads, 2.0)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        squares = squares + norm.detach().float().cpu() ** 2
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(squares, group=group)
    return squares.sqrt()


def clip_grad_norm(
    parameters: Iterable[torch.nn.Parameter],
    max_norm: float,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Scale every gradient so their global 2-norm is at most ``max_norm``; returns the
    norm before clipping (torch's ``clip_grad_norm_`` semantics, ``1e-6`` included)."""
    params = [p for p in parameters if p.grad is not None]
    norm = total_grad_norm(params, group)
    coef = min(1.0, float(max_norm) / (float(norm) + 1e-6))
    if coef < 1.0:
        for p in params:
            p.grad.mul_(coef)
    return norm
