"""A mixture-of-experts layer: top-k routing, index-based dispatch, load-balancing loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deepseek.moe.router import TopKRouter, load_balancing_loss


class Expert(nn.Module):
    """One expert: a two-layer MLP ``d_model -> d_hidden -> d_model`` with GELU."""

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MoELayer(nn.Module):
    """Routes each token to ``top_k`` of ``num_experts`` experts and sums their outputs,
    weighted by the router's gate values.

    Each expert gathers only its own tokens (``index_select``) and its weighted outputs are
    scattered back with ``index_add_``; no dense tokens x experts product is formed.
    With ``capacity_factor``, an expert processes at most
    ``ceil(capacity_factor * tokens * top_k / num_experts)`` assignments; first choices
    are served before second choices, earlier tokens before later ones, and the overflow is
    dropped (it contributes zero, as in the Switch Transformer).

    After every forward, ``aux_loss`` holds the load-balancing loss of that batch (see
    :func:`deepseek.moe.router.load_balancing_loss`); add a small multiple of it to the
    training loss.

    >>> import torch
    >>> layer = MoELayer(d_model=16, d_hidden=32, num_experts=4, top_k=2)
    >>> y = layer(torch.randn(2, 5, 16))
    >>> y.shape, layer.aux_loss.shape
    (torch.Size([2, 5, 16]), torch.Size([]))
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        num_experts: int,
        top_k: int = 2,
        capacity_factor: float | None = None,
        normalize_weights: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("d_model", d_model),
            ("d_hidden", d_hidden),
            ("num_experts", num_experts),
            ("top_k", top_k),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if top_k > num_experts:
            raise ValueError(f"top_k ({top_k}) cannot exceed num_experts ({num_experts})")
        if capacity_factor is not None and not capacity_factor > 0:
            raise ValueError(f"capacity_factor must be > 0 or None, got {capacity_factor!r}")
        self.d_model = d_model
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.router = TopKRouter(d_model, num_experts, top_k, normalize_weights)
        self.experts = nn.ModuleList(Expert(d_model, d_hidden) for _ in range(num_experts))
        self.aux_loss: torch.Tensor | None = None

    def __getstate__(self) -> dict:
        # aux_loss is part of the last forward's autograd graph; copies and pickles of the
        # layer (deepcopy, quantization, torch.save) must not carry it.
        state = self.__dict__.copy()
        state["aux_loss"] = None
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"MoELayer expects a floating tensor, got {_describe(x)}")
        if x.dim() == 0 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"MoELayer expects input of shape (..., d_model={self.d_model}), "
                f"got {tuple(x.shape)}"
            )
        tokens = x.reshape(-1, self.d_model)
        route = self.router(tokens)
        self.aux_loss = load_balancing_loss(route.probs, route.experts)

        # One row per (token, slot) assignment, slot-major so that capacity keeps every
        # token's first choice before anyone's second choice.
        expert_ids = route.experts.t().reshape(-1)
        token_ids = torch.arange(tokens.shape[0], device=x.device).repeat(self.top_k)
        gates = route.weights.t().reshape(-1)
        if self.capacity_factor is not None:
            keep = self._within_capacity(expert_ids, tokens.shape[0])
            expert_ids, token_ids, gates = expert_ids[keep], token_ids[keep], gates[keep]

        order = torch.argsort(expert_ids, stable=True)
        counts = torch.bincount(expert_ids, minlength=self.num_experts).tolist()
        out = torch.zeros_like(tokens)
        for expert, ids, gate in zip(
            self.experts, token_ids[order].split(counts), gates[order].split(counts)
        ):
            if ids.numel():
                out.index_add_(0, ids, expert(tokens.index_select(0, ids)) * gate[:, None])
        return out.reshape(x.shape)

    def capacity(self, num_tokens: int) -> int | None:
        """Most assignments one expert takes for a batch of ``num_tokens`` tokens."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts)

    def _within_capacity(self, expert_ids: torch.Tensor, num_tokens: int) -> torch.Tensor:
        # Position of each assignment in its expert's queue, in assignment order.
        one_hot = F.one_hot(expert_ids, self.num_experts)
        position = (one_hot.cumsum(dim=0) * one_hot).sum(dim=1) - 1
        return position < self.capacity(num_tokens)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__
