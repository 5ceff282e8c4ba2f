"""Experts stored as stacked weights and computed with grouped matrix multiplies.

``GroupedExperts`` keeps every expert's weights in one tensor per projection,
``w1: (E, d_model, d_hidden)``, ``w2: (E, d_hidden, d_model)`` (and ``w3`` for SwiGLU), so
the experts of a layer run as a single grouped GEMM over tokens sorted by expert
(``torch._grouped_mm``) instead of a Python loop of small matmuls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("swiglu", "gelu")
_GROUPED_MM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Rows of each expert's group are padded to a multiple of this on the device type
# (CUDA's grouped GEMM wants 16-byte aligned groups; the CPU kernel of torch 2.13 takes
# any offsets, only the row strides must be 16-byte multiples).
GROUP_ALIGNMENT = {"cuda": 16}


def has_grouped_mm() -> bool:
    return hasattr(torch, "_grouped_mm")


def grouped_mm_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` runs ``x @ weight[e]`` for these tensors."""
    if not has_grouped_mm() or x.dtype not in _GROUPED_MM_DTYPES or x.dtype != weight.dtype:
        return False
    if x.device.type not in ("cpu", "cuda"):
        return False
    size = x.element_size()
    return (x.shape[-1] * size) % 16 == 0 and (weight.shape[-1] * size) % 16 == 0


def grouped_mm(
    x: torch.Tensor,
    weight: torch.Tensor,
    counts: torch.Tensor,
    *,
    use_grouped_mm: bool | None = None,
) -> torch.Tensor:
    """``cat([x_e @ weight[e] for each expert e])`` where ``x`` holds ``counts[e]``
    consecutive rows for expert ``e`` (rows sorted by expert).

    With ``torch._grouped_mm`` (no host synchronisation: the offsets stay on the device);
    otherwise, or when the shapes are not 16-byte aligned, a split-by-counts loop (one
    host read of ``counts``).

    >>> import torch
    >>> x, w = torch.randn(5, 4), torch.randn(2, 4, 8)
    >>> y = grouped_mm(x, w, torch.tensor([2, 3]))
    >>> torch.allclose(y, torch.cat([x[:2] @ w[0], x[2:] @ w[1]]), atol=1e-6)
    True
    """
    if use_grouped_mm is None:
        use_grouped_mm = grouped_mm_usable(x, weight)
    if use_grouped_mm:
        offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
        return torch._grouped_mm(x, weight, offs=offsets)
    parts = x.split(counts.tolist())
    return torch.cat([part @ weight[e] for e, part in enumerate(parts)])


def pad_groups(
    expert_of_row: torch.Tensor, counts: torch.Tensor, alignment: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sorted by expert, moved to a layout where each expert's group starts at a
    multiple of ``alignment``: ``(destination row of each row, padded counts)``. The
    padded layout has ``rows + experts * (alignment - 1)`` rows whatever the routing, so
    no shape depends on the data (no host synchronisation).

    >>> import torch
    >>> pad_groups(torch.tensor([0, 1, 1, 1]), torch.tensor([1, 3]), 4)
    (tensor([0, 4, 5, 6]), tensor([4, 4]))
    """
    padded = (counts + alignment - 1) // alignment * alignment
    starts = torch.cumsum(counts, 0) - counts
    padded_starts = torch.cumsum(padded, 0) - padded
    rows = torch.arange(expert_of_row.numel(), device=expert_of_row.device)
    return padded_starts[expert_of_row] + rows - starts[expert_of_row], padded


class GroupedExperts(nn.Module):
    """``num_experts`` feed-forward experts with stacked weights.

    ``activation="swiglu"``: ``(silu(x W1) * (x W3)) W2`` (DeepSeek, Llama);
    ``activation="gelu"``: ``gelu(x W1 + b1) W2 + b2`` (the original per-expert MLP).
    ``bias`` adds per-expert biases ``b1: (E, d_hidden)``, ``b2: (E, d_model)``.

    >>> import torch
    >>> experts = GroupedExperts(num_experts=3, d_model=8, d_hidden=16)
    >>> x = torch.randn(6, 8)  # rows sorted by expert: 1, 2 and 3 rows
    >>> experts(x, torch.tensor([1, 2, 3])).shape
    torch.Size([6, 8])
    """

    def __init__(
        self,
        num_experts: int,
        d_model: int,
        d_hidden: int,
        activation: str = "swiglu",
        bias: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.num_experts = num_experts
        self.d_model = d_model
        self.d_hidden = d_hidden
        self.activation = activation
        self.w1 = nn.Parameter(torch.empty(num_experts, d_model, d_hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, d_hidden, d_model))
        self.w3 = (
            nn.Parameter(torch.empty(num_experts, d_model, d_hidden))
            if activation == "swiglu"
            else None
        )
        self.b1 = nn.Parameter(torch.empty(num_experts, d_hidden)) if bias else None
        self.b2 = nn.Parameter(torch.empty(num_experts, d_model)) if bias else None
        self.group_alignment: int | None = None  # None: by device type (GROUP_ALIGNMENT)
        self.use_grouped_mm: bool | None = None  # None: where usable
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default initialisation, per expert.
        for weight, bias in ((self.w1, self.b1), (self.w3, None), (self.w2, self.b2)):
            if weight is None:
                continue
            bound = 1.0 / math.sqrt(weight.shape[1])
            nn.init.uniform_(weight, -bound, bound)
            if bias is not None:
                nn.init.uniform_(bias, -bound, bound)

    def forward(
        self,
        x: torch.Tensor,
        counts: torch.Tensor,
        expert_of_row: torch.Tensor | None = None,
        row_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rows of ``x`` sorted by expert, ``counts[e]`` rows for expert ``e``;
        ``expert_of_row`` (the sorted expert ids) saves recomputing them; each output row
        is multiplied by ``row_weights`` (applied to the hidden activation, which is
        narrower than the output)."""
        if expert_of_row is None:
            expert_of_row = torch.repeat_interleave(
                torch.arange(self.num_experts, device=x.device), counts, output_size=x.shape[0]
            )
        use = self.use_grouped_mm
        if use is None:
            use = grouped_mm_usable(x, self.w1) and grouped_mm_usable(
                x.new_empty(0, self.d_hidden), self.w2
            )
        alignment = self.group_alignment or GROUP_ALIGNMENT.get(x.device.type, 1)
        if not use or alignment == 1:
            return self._compute(x, counts, expert_of_row, use, row_weights)
        destination, padded = pad_groups(expert_of_row, counts, alignment)
        rows = x.shape[0] + self.num_experts * (alignment - 1)
        padded_x = x.new_zeros(rows, x.shape[1]).index_copy(0, destination, x)
        padded_experts = expert_of_row.new_zeros(rows).index_copy(0, destination, expert_of_row)
        padded_weights = None
        if row_weights is not None:
            padded_weights = row_weights.new_zeros(rows).index_copy(0, destination, row_weights)
        out = self._compute(padded_x, padded, padded_experts, use, padded_weights)
        return out.index_select(0, destination)

    def _compute(
        self,
        x: torch.Tensor,
        counts: torch.Tensor,
        expert_of_row: torch.Tensor,
        use: bool,
        row_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = grouped_mm(x, self.w1, counts, use_grouped_mm=use)
        if self.b1 is not None:
            hidden = hidden + self.b1.index_select(0, expert_of_row)
        if self.w3 is not None:
            hidden = F.silu(hidden) * grouped_mm(x, self.w3, counts, use_grouped_mm=use)
        else:
            hidden = F.gelu(hidden)
        if row_weights is not None:
            hidden = hidden * row_weights.to(hidden.dtype).unsqueeze(1)
        out = grouped_mm(hidden, self.w2, counts, use_grouped_mm=use)
        if self.b2 is not None:
            bias = self.b2.index_select(0, expert_of_row)
            if row_weights is not None:
                bias = bias * row_weights.to(bias.dtype).unsqueeze(1)
            out = out + bias
        return out

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (E, capacity, d_model)``, each expert's slots (zeros where empty): one
        batched matmul per projection."""
        hidden = torch.bmm(x, self.w1)
        if self.b1 is not None:
            hidden = hidden + self.b1[:, None, :]
        if self.activation == "swiglu":
            hidden = F.silu(hidden) * torch.bmm(x, self.w3)
        else:
            hidden = F.gelu(hidden)
        out = torch.bmm(hidden, self.w2)
        if self.b2 is not None:
            out = out + self.b2[:, None, :]
        return out

    def extra_repr(self) -> str:
        return (
            f"num_experts={self.num_experts}, d_model={self.d_model}, d_hidden={self.d_hidden}, "
            f"activation={self.activation}, bias={self.b1 is not None}"
        )


class FeedForward(nn.Module):
    """A dense feed-forward block (the shared experts, the dense layers of the LM).

    >>> import torch
    >>> FeedForward(8, 32)(torch.randn(2, 8)).shape
    torch.Size([2, 8])
    """

    def __init__(
        self, d_model: int, d_hidden: int, activation: str = "swiglu", bias: bool = False
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.w1 = nn.Linear(d_model, d_hidden, bias=bias)
        self.w3 = nn.Linear(d_model, d_hidden, bias=bias) if activation == "swiglu" else None
        self.w2 = nn.Linear(d_hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w3 is not None:
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        return self.w2(F.gelu(self.w1(x)))
