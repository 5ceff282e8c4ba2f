"""The mixture-of-experts layer: routing, sorted grouped-GEMM dispatch, balancing stats."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepseek.moe.experts import ACTIVATIONS, FeedForward, GroupedExperts
from deepseek.moe.router import (
    TopKRouter,
    check_routing,
    device_balancing_loss,
    router_z_loss,
)

# Attributes that hold the last forward's autograd graph: never copied or pickled.
_GRAPH_ATTRIBUTES = ("aux_loss", "device_aux_loss", "z_loss")


class Expert(nn.Module):
    """One expert of the original per-expert layout: ``d_model -> d_hidden -> d_model``
    with GELU. ``MoELayer`` now stacks its experts (``GroupedExperts``); state dicts of
    this layout (``experts.<i>.fc1.weight``, ...) still load into a GELU layer with biases.
    """

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MoELayer(nn.Module):
    """Routes each token to ``top_k`` of ``num_experts`` experts and sums their outputs,
    weighted by the router's gate values; ``num_shared_experts`` dense experts see every
    token (DeepSeekMoE).

    Dispatch sorts the (token, slot) assignments by expert (stable argsort, ``bincount``)
    and runs all experts as grouped matrix multiplies over stacked weights
    (:class:`~deepseek.moe.experts.GroupedExperts`): no Python loop over experts or tokens
    and no host synchronisation when ``torch._grouped_mm`` is available.

    ``capacity_factor=None`` is dropless. With a factor, an expert processes at most
    ``ceil(capacity_factor * tokens * top_k / num_experts)`` assignments: first choices
    are served before second choices, earlier tokens before later ones, and the overflow
    is dropped (it contributes zero, as in the Switch Transformer); the experts then run as
    one batched matmul over a static ``(experts, capacity, d_model)`` layout.

    Router options (``score_func``, ``normalize_weights``, ``routed_scaling_factor``,
    ``n_groups``/``topk_groups``) are those of :class:`~deepseek.moe.router.TopKRouter`;
    ``router.score_bias`` is the selection bias of auxiliary-loss-free balancing
    (:meth:`update_bias`). ``activation`` is ``"gelu"`` (default: the original layer) or
    ``"swiglu"``; ``bias=None`` gives GELU experts biases and SwiGLU experts none.

    After every forward the layer holds, for that batch: ``aux_loss`` (Switch/GShard
    expert-level balance loss, 1.0 when balanced), ``device_aux_loss`` (the same over
    ``balance_devices`` blocks of experts), ``z_loss`` (router z-loss), ``expert_load``
    (assignments each expert was chosen for), ``load_ratio`` (max / mean of that) and
    ``dropped_tokens`` (assignments dropped for capacity). Add small multiples of the
    losses to the training loss (:class:`~deepseek.moe.balancing.MoELoadBalancing` does).

    >>> import torch
    >>> layer = MoELayer(d_model=16, d_hidden=32, num_experts=4, top_k=2)
    >>> y = layer(torch.randn(2, 5, 16))
    >>> y.shape, layer.aux_loss.shape
    (torch.Size([2, 5, 16]), torch.Size([]))
    >>> deepseek_v3_like = MoELayer(16, 8, num_experts=8, top_k=2, num_shared_experts=1,
    ...     activation="swiglu", score_func="sigmoid", normalize_weights=True,
    ...     routed_scaling_factor=2.5, n_groups=4, topk_groups=2)
    >>> deepseek_v3_like(torch.randn(10, 16)).shape, int(deepseek_v3_like.expert_load.sum())
    (torch.Size([10, 16]), 20)
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        num_experts: int,
        top_k: int = 2,
        capacity_factor: float | None = None,
        normalize_weights: bool = False,
        *,
        num_shared_experts: int = 0,
        activation: str = "gelu",
        bias: bool | None = None,
        score_func: str = "softmax",
        routed_scaling_factor: float = 1.0,
        n_groups: int = 1,
        topk_groups: int | None = None,
        balance_devices: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("d_hidden", d_hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        check_routing(num_experts, top_k, score_func, n_groups, topk_groups)
        if capacity_factor is not None and not capacity_factor > 0:
            raise ValueError(f"capacity_factor must be > 0 or None, got {capacity_factor!r}")
        if isinstance(num_shared_experts, bool) or not isinstance(num_shared_experts, int):
            raise ValueError(f"num_shared_experts must be an int, got {num_shared_experts!r}")
        if num_shared_experts < 0:
            raise ValueError(f"num_shared_experts must be >= 0, got {num_shared_experts}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if balance_devices is not None and (balance_devices < 1 or num_experts % balance_devices):
            raise ValueError(
                f"balance_devices ({balance_devices}) must be a positive divisor of "
                f"num_experts ({num_experts})"
            )
        bias = activation == "gelu" if bias is None else bias
        self.d_model = d_model
        self.d_hidden = d_hidden
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.num_shared_experts = num_shared_experts
        self.router = TopKRouter(
            d_model,
            num_experts,
            top_k,
            normalize_weights,
            score_func=score_func,
            n_groups=n_groups,
            topk_groups=topk_groups,
            routed_scaling_factor=routed_scaling_factor,
        )
        self.experts = GroupedExperts(num_experts, d_model, d_hidden, activation, bias)
        self.shared_experts = (
            FeedForward(d_model, num_shared_experts * d_hidden, activation, bias)
            if num_shared_experts
            else None
        )
        self._balance_devices = balance_devices
        # Expert parallelism (set by deepseek.moe.parallel.shard_experts).
        self.ep_group: Any = None
        self.ep_size = 1
        self.ep_rank = 0
        # Load observed since the last bias update (auxiliary-loss-free balancing).
        self.register_buffer("load_since_update", torch.zeros(num_experts), persistent=False)
        self.aux_loss: torch.Tensor | None = None
        self.device_aux_loss: torch.Tensor | None = None
        self.z_loss: torch.Tensor | None = None
        self.expert_load: torch.Tensor | None = None
        self.load_ratio: torch.Tensor | None = None
        self.dropped_tokens: torch.Tensor | None = None
        self._register_load_state_dict_pre_hook(_convert_per_expert_state)

    @property
    def balance_devices(self) -> int:
        """Blocks of experts the device-level loss balances: ``balance_devices`` if given,
        else the expert-parallel world size when sharded, else ``n_groups``."""
        if self._balance_devices is not None:
            return self._balance_devices
        return self.ep_size if self.ep_size > 1 else self.router.n_groups

    @property
    def num_local_experts(self) -> int:
        return self.num_experts // self.ep_size

    def __getstate__(self) -> dict:
        # The losses are part of the last forward's autograd graph; copies and pickles of
        # the layer (deepcopy, quantization, torch.save) must not carry them.
        state = self.__dict__.copy()
        for name in _GRAPH_ATTRIBUTES:
            state[name] = None
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
        counts = expert_counts(route.experts.reshape(-1), self.num_experts)
        self._record_statistics(route, counts)
        if self.ep_size > 1:
            from deepseek.moe.parallel import expert_parallel_dispatch

            out = expert_parallel_dispatch(self, tokens, route)
        elif self.capacity_factor is not None:
            out = self._dispatch_with_capacity(tokens, route)
        else:
            out = self._dispatch_dropless(tokens, route, counts)
            self.dropped_tokens = torch.zeros((), dtype=torch.long, device=x.device)
        if self.shared_experts is not None:
            out = out + self.shared_experts(tokens)
        return out.reshape(x.shape)

    # -- dispatch ----------------------------------------------------------------------
    def _dispatch_dropless(
        self, tokens: torch.Tensor, route: Any, counts: torch.Tensor
    ) -> torch.Tensor:
        k = route.experts.shape[1]
        flat = route.experts.reshape(-1)  # token-major (token, slot) assignments
        order = torch.argsort(flat, stable=True)
        token_of_row = order // k
        # index_select / index_add: their backward passes are each other, far cheaper on
        # the CPU than the accumulating index_put behind advanced indexing. The gate weight
        # scales each row's hidden activation (d_hidden wide, not d_model), and the rows go
        # straight back to their tokens: no (tokens, top_k, d_model) intermediate.
        expert_out = self.experts(
            tokens.index_select(0, token_of_row),
            counts,
            flat[order],
            row_weights=route.weights.reshape(-1).index_select(0, order),
        )
        return tokens.new_zeros(tokens.shape).index_add(0, token_of_row, expert_out)

    def _dispatch_with_capacity(self, tokens: torch.Tensor, route: Any) -> torch.Tensor:
        num_tokens, k = route.experts.shape
        num_experts, capacity = self.num_experts, self.capacity(num_tokens)
        keep, flat, position = capacity_mask(route.experts, num_experts, capacity)
        # Slot of each assignment in the (experts, capacity) layout; dropped ones go to a
        # spare last row that is never read.
        slot = torch.where(keep, flat * capacity + position, num_experts * capacity)
        token_ids = torch.arange(num_tokens, device=tokens.device).repeat(k)
        slots = tokens.new_zeros(num_experts * capacity + 1, self.d_model)
        slots = slots.index_copy(0, slot, tokens.index_select(0, token_ids))
        expert_out = self.experts.forward_padded(
            slots[:-1].view(num_experts, capacity, self.d_model)
        )
        expert_out = torch.cat(
            [expert_out.reshape(-1, self.d_model), expert_out.new_zeros(1, self.d_model)]
        )
        per_slot = expert_out.index_select(0, slot).view(k, num_tokens, self.d_model)
        self.dropped_tokens = (~keep).sum()
        return combine(per_slot.transpose(0, 1), route.weights)

    def capacity(self, num_tokens: int) -> int | None:
        """Most assignments one expert takes for a batch of ``num_tokens`` tokens."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts)

    # -- balancing ---------------------------------------------------------------------
    def _record_statistics(self, route: Any, counts: torch.Tensor) -> None:
        probs = route.probs
        if self.router.score_func == "sigmoid":
            probs = probs / probs.sum(dim=-1, keepdim=True)
        fraction = counts.to(probs.dtype) / max(route.experts.numel(), 1)
        mean_probs = probs.mean(dim=0)
        self.aux_loss = self.num_experts * torch.sum(fraction * mean_probs)
        self.device_aux_loss = device_balancing_loss(fraction, mean_probs, self.balance_devices)
        self.z_loss = router_z_loss(route.logits)
        load = counts.detach().float()
        self.expert_load = load
        self.load_ratio = load.max() / load.mean().clamp_min(1e-9)
        if self.training and torch.is_grad_enabled():
            self.load_since_update += load

    @torch.no_grad()
    def update_bias(self, rate: float, load: torch.Tensor | None = None) -> None:
        """Auxiliary-loss-free balancing step (DeepSeek-V3): raise the selection bias of
        under-loaded experts and lower it for over-loaded ones by ``rate``, using ``load``
        (default: the load seen in training since the last update, which is then reset).
        The gate weights never see the bias.

        >>> import torch
        >>> layer = MoELayer(4, 8, num_experts=2, top_k=1)
        >>> layer.update_bias(0.1, load=torch.tensor([3.0, 1.0]))
        >>> layer.router.score_bias
        tensor([-0.1000,  0.1000])
        """
        load = self.load_since_update if load is None else load.to(self.load_since_update)
        # No load (sign 0) leaves the bias as it is; no host-side check needed.
        self.router.score_bias += rate * torch.sign(load.mean() - load)
        self.load_since_update.zero_()


def expert_counts(expert_ids: torch.Tensor, num_experts: int) -> torch.Tensor:
    """How many entries of ``expert_ids`` name each expert, ``(num_experts,)`` int64.

    ``bincount(minlength=E)`` on the CPU; elsewhere a ``scatter_add_`` into ``E`` zeros,
    because CUDA's ``bincount`` reads the largest id on the host (a synchronisation).
    Ids equal to ``num_experts`` (the expert-parallel "dropped" sentinel) are not counted.

    >>> import torch
    >>> expert_counts(torch.tensor([2, 0, 2, 4]), 4)
    tensor([1, 0, 2, 0])
    """
    if expert_ids.device.type == "cpu":
        return torch.bincount(expert_ids, minlength=num_experts + 1)[:num_experts]
    counts = torch.zeros(num_experts + 1, dtype=torch.long, device=expert_ids.device)
    return counts.scatter_add_(0, expert_ids, torch.ones_like(expert_ids))[:num_experts]


def combine(per_slot: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[t, k] * per_slot[t, k]``: ``(tokens, top_k, d) -> (tokens, d)``."""
    return (per_slot * weights.to(per_slot.dtype).unsqueeze(-1)).sum(dim=1)


def capacity_mask(
    experts: torch.Tensor, num_experts: int, capacity: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which (token, slot) assignments an expert of ``capacity`` serves, in slot-major
    order (every token's first choice before anyone's second): ``(keep, expert,
    position in the expert's queue)``, each flat of length ``tokens * top_k``. One stable
    sort, no one-hot matrix, no host synchronisation."""
    flat = experts.t().reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = expert_counts(flat, num_experts)
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.arange(flat.numel(), device=flat.device) - starts[flat[order]]
    position = torch.empty_like(ranks).scatter_(0, order, ranks)
    return position < capacity, flat, position


def _convert_per_expert_state(state: dict, prefix: str, *args: Any) -> None:
    """Load state dicts of the per-expert layout (``experts.<i>.fc1.weight``) and those
    saved before ``router.score_bias`` existed."""
    first = f"{prefix}experts.0.fc1.weight"
    if first in state:
        index = 0
        w1, b1, w2, b2 = [], [], [], []
        while f"{prefix}experts.{index}.fc1.weight" in state:
            base = f"{prefix}experts.{index}."
            w1.append(state.pop(base + "fc1.weight").t())
            w2.append(state.pop(base + "fc2.weight").t())
            if base + "fc1.bias" in state:
                b1.append(state.pop(base + "fc1.bias"))
                b2.append(state.pop(base + "fc2.bias"))
            index += 1
        state[f"{prefix}experts.w1"] = torch.stack(w1)
        state[f"{prefix}experts.w2"] = torch.stack(w2)
        if b1:
            state[f"{prefix}experts.b1"] = torch.stack(b1)
            state[f"{prefix}experts.b2"] = torch.stack(b2)
    gate = state.get(f"{prefix}router.gate.weight")
    if gate is not None and f"{prefix}router.score_bias" not in state:
        state[f"{prefix}router.score_bias"] = torch.zeros(gate.shape[0], dtype=torch.float32)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__
