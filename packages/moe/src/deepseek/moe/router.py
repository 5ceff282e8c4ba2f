"""Top-k softmax routing and the Switch-Transformer load-balancing loss."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class RouterOutput(NamedTuple):
    probs: torch.Tensor  # (tokens, num_experts) softmax over all experts
    weights: torch.Tensor  # (tokens, top_k) gate value of each chosen expert
    experts: torch.Tensor  # (tokens, top_k) chosen expert indices, best first


class TopKRouter(nn.Module):
    """A linear layer scores every expert, a softmax turns scores into probabilities and
    each token goes to its ``top_k`` most probable experts.

    The gate weights are the chosen experts' probabilities as they are (Switch
    Transformer), so the router gets a gradient from the task loss even with ``top_k=1``;
    ``normalize_weights=True`` rescales them to sum to 1 per token (Mixtral style).

    >>> import torch
    >>> router = TopKRouter(d_model=8, num_experts=4, top_k=2)
    >>> out = router(torch.randn(3, 8))
    >>> out.experts.shape, out.weights.shape
    (torch.Size([3, 2]), torch.Size([3, 2]))
    """

    def __init__(
        self, d_model: int, num_experts: int, top_k: int = 2, normalize_weights: bool = False
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.top_k = top_k
        self.normalize_weights = normalize_weights
        self.gate = nn.Linear(d_model, num_experts, bias=False)

    def forward(self, tokens: torch.Tensor) -> RouterOutput:
        # Softmax in fp32: small probability differences decide the routing.
        probs = self.gate(tokens).float().softmax(dim=-1)
        weights, experts = probs.topk(self.top_k, dim=-1)
        if self.normalize_weights:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return RouterOutput(probs, weights.to(tokens.dtype), experts)


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch Transformer auxiliary loss: ``E * sum_i(f_i * P_i)``.

    ``f_i`` is the fraction of routing assignments (token, slot) that chose expert ``i``,
    ``P_i`` the mean router probability of expert ``i``. It is 1.0 when routing is
    uniform and approaches ``E`` when every token collapses onto one expert; only ``P``
    carries a gradient (``f`` comes from an argmax).

    >>> import torch
    >>> probs = torch.full((4, 2), 0.5)
    >>> load_balancing_loss(probs, torch.tensor([[0], [1], [0], [1]])).item()
    1.0
    """
    num_experts = probs.shape[-1]
    counts = torch.bincount(experts.reshape(-1), minlength=num_experts)
    fraction = counts.to(probs.dtype) / experts.numel()
    return num_experts * torch.sum(fraction * probs.mean(dim=0))
