"""Top-k routing (softmax or sigmoid scores, group-limited, bias-corrected selection) and
the balancing losses computed from it.

The router follows DeepSeek-V2/V3:

- ``scores = softmax(logits)`` or ``sigmoid(logits)`` (in fp32: small score differences
  decide the routing);
- the experts are *selected* on ``scores + score_bias``: ``score_bias`` is the per-expert
  correction of auxiliary-loss-free balancing (zero unless a balancer updates it);
- with ``n_groups > 1`` and ``topk_groups < n_groups`` a token may only pick experts from
  its ``topk_groups`` best groups (a group's score is the sum of its two best selection
  scores, DeepSeek-V3);
- the gate weights are the *unbiased* scores of the chosen experts, optionally normalised
  to sum to one per token, then multiplied by ``routed_scaling_factor``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

SCORE_FUNCS = ("softmax", "sigmoid")


class RouterOutput(NamedTuple):
    probs: torch.Tensor  # (tokens, num_experts) scores (softmax probabilities or sigmoids)
    weights: torch.Tensor  # (tokens, top_k) gate value of each chosen expert
    experts: torch.Tensor  # (tokens, top_k) chosen expert indices, best first
    logits: torch.Tensor | None = None  # (tokens, num_experts) fp32 router logits


class TopKRouter(nn.Module):
    """A linear layer scores every expert and each token goes to its ``top_k`` best.

    The default (softmax scores, weights as they are) is the Switch Transformer router, so
    the router gets a gradient from the task loss even with ``top_k=1``;
    ``normalize_weights=True`` rescales the chosen weights to sum to 1 per token (Mixtral,
    DeepSeek-V3). See the module docstring for the other options.

    >>> import torch
    >>> router = TopKRouter(d_model=8, num_experts=4, top_k=2)
    >>> out = router(torch.randn(3, 8))
    >>> out.experts.shape, out.weights.shape
    (torch.Size([3, 2]), torch.Size([3, 2]))
    >>> grouped = TopKRouter(8, 8, top_k=2, score_func="sigmoid", n_groups=4, topk_groups=1)
    >>> chosen = grouped(torch.randn(5, 8)).experts
    >>> bool(((chosen // 2)[:, 0] == (chosen // 2)[:, 1]).all())  # both from one group
    True
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        top_k: int = 2,
        normalize_weights: bool = False,
        *,
        score_func: str = "softmax",
        n_groups: int = 1,
        topk_groups: int | None = None,
        routed_scaling_factor: float = 1.0,
    ) -> None:
        super().__init__()
        check_routing(num_experts, top_k, score_func, n_groups, topk_groups)
        if not routed_scaling_factor > 0:
            raise ValueError(f"routed_scaling_factor must be > 0, got {routed_scaling_factor!r}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.normalize_weights = normalize_weights
        self.score_func = score_func
        self.n_groups = n_groups
        self.topk_groups = n_groups if topk_groups is None else topk_groups
        self.routed_scaling_factor = float(routed_scaling_factor)
        self.gate = nn.Linear(d_model, num_experts, bias=False)
        # Auxiliary-loss-free balancing: added to the scores for selection only.
        self.register_buffer("score_bias", torch.zeros(num_experts, dtype=torch.float32))

    def forward(self, tokens: torch.Tensor) -> RouterOutput:
        logits = self.gate(tokens).float()
        check_finite_scores(logits)
        scores = logits.softmax(dim=-1) if self.score_func == "softmax" else logits.sigmoid()
        experts = self.select(scores.detach() + self.score_bias)
        weights = scores.gather(1, experts)
        if self.normalize_weights:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        if self.routed_scaling_factor != 1.0:
            weights = weights * self.routed_scaling_factor
        return RouterOutput(scores, weights.to(tokens.dtype), experts, logits)

    def select(self, selection: torch.Tensor) -> torch.Tensor:
        """Indices ``(tokens, top_k)`` of the chosen experts, best first."""
        if self.n_groups > 1 and self.topk_groups < self.n_groups:
            tokens = selection.shape[0]
            per_group = self.num_experts // self.n_groups
            grouped = selection.view(tokens, self.n_groups, per_group)
            group_scores = grouped.topk(min(2, per_group), dim=-1).values.sum(dim=-1)
            best_groups = group_scores.topk(self.topk_groups, dim=-1).indices
            allowed = torch.zeros_like(group_scores, dtype=torch.bool)
            allowed.scatter_(1, best_groups, True)
            selection = grouped.masked_fill(~allowed[:, :, None], float("-inf"))
            selection = selection.view(tokens, self.num_experts)
        return selection.topk(self.top_k, dim=-1).indices

    def extra_repr(self) -> str:
        return (
            f"num_experts={self.num_experts}, top_k={self.top_k}, score_func={self.score_func}, "
            f"n_groups={self.n_groups}, topk_groups={self.topk_groups}, "
            f"normalize_weights={self.normalize_weights}, "
            f"routed_scaling_factor={self.routed_scaling_factor}"
        )


def check_routing(
    num_experts: int, top_k: int, score_func: str, n_groups: int, topk_groups: int | None
) -> None:
    """One clear ``ValueError`` for each impossible routing configuration."""
    for name, value in (("num_experts", num_experts), ("top_k", top_k), ("n_groups", n_groups)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if top_k > num_experts:
        raise ValueError(
            f"top_k ({top_k}) cannot exceed num_experts ({num_experts}): lower top_k or add experts"
        )
    if score_func not in SCORE_FUNCS:
        raise ValueError(f"score_func must be one of {SCORE_FUNCS}, got {score_func!r}")
    if num_experts % n_groups:
        raise ValueError(
            f"n_groups ({n_groups}) must divide num_experts ({num_experts}) so that every "
            "group holds the same number of experts"
        )
    if topk_groups is not None:
        if isinstance(topk_groups, bool) or not isinstance(topk_groups, int):
            raise ValueError(f"topk_groups must be an int or None, got {topk_groups!r}")
        if not 1 <= topk_groups <= n_groups:
            raise ValueError(f"topk_groups must be in [1, n_groups={n_groups}], got {topk_groups}")
        reachable = topk_groups * (num_experts // n_groups)
        if top_k > reachable:
            raise ValueError(
                f"top_k ({top_k}) exceeds the {reachable} experts a token can reach in its "
                f"topk_groups={topk_groups} group(s) of {num_experts // n_groups}: raise "
                "topk_groups or lower top_k"
            )


def check_finite_scores(logits: torch.Tensor) -> None:
    """Stop on NaN/inf router logits with one clear error.

    On the CPU the check is an ordinary comparison (there is no device to wait for). On an
    accelerator it is ``torch._assert_async``: the device raises the assertion itself, so
    the hot path never waits for the host (the error then surfaces as a device-side
    assertion at the next synchronisation).
    """
    finite = torch.isfinite(logits).all()
    if logits.device.type == "cpu":
        if not bool(finite):
            raise FloatingPointError(
                "MoE router scores are not finite (NaN or inf): the input of the MoE layer "
                "already holds non-finite values or the router weights diverged. Lower the "
                "learning rate, clip gradients, or check the data"
            )
    else:
        torch._assert_async(finite, "MoE router scores are not finite (NaN or inf)")


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch Transformer / GShard auxiliary loss: ``E * sum_i(f_i * P_i)``.

    ``f_i`` is the fraction of routing assignments (token, slot) that chose expert ``i``,
    ``P_i`` the mean router probability of expert ``i`` (sigmoid scores are first
    normalised per token). It is 1.0 when routing is uniform and approaches ``E`` when
    every token collapses onto one expert; only ``P`` carries a gradient (``f`` comes
    from a top-k).

    >>> import torch
    >>> probs = torch.full((4, 2), 0.5)
    >>> load_balancing_loss(probs, torch.tensor([[0], [1], [0], [1]])).item()
    1.0
    """
    num_experts = probs.shape[-1]
    counts = torch.bincount(experts.reshape(-1), minlength=num_experts)
    fraction = counts.to(probs.dtype) / experts.numel()
    return num_experts * torch.sum(fraction * probs.mean(dim=0))


def device_balancing_loss(
    fraction: torch.Tensor, mean_probs: torch.Tensor, num_devices: int
) -> torch.Tensor:
    """DeepSeek-V2's device-level balance loss ``D * sum_d(F_d * P_d)``: ``F_d`` and
    ``P_d`` sum the expert-level fractions and mean probabilities over the experts of
    device ``d`` (consecutive blocks of ``E / D`` experts). 1.0 when balanced.

    >>> import torch
    >>> device_balancing_loss(torch.full((4,), 0.25), torch.full((4,), 0.25), 2).item()
    1.0
    """
    per_device_f = fraction.view(num_devices, -1).sum(dim=1)
    per_device_p = mean_probs.view(num_devices, -1).sum(dim=1)
    return num_devices * torch.sum(per_device_f * per_device_p)


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss ``mean(logsumexp(logits)^2)``: keeps logits small.

    >>> import torch
    >>> round(router_z_loss(torch.zeros(3, 4)).item(), 4)  # log(4)^2
    1.9218
    """
    return torch.logsumexp(logits.float(), dim=-1).square().mean()
