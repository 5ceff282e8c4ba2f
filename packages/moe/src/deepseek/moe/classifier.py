"""``moe-mlp``: a tiny classifier built around one MoE layer, for demos and tests."""

from __future__ import annotations

import torch
from torch import nn

from deepseek.moe.layer import MoELayer


class MoEClassifier(nn.Module):
    """``Linear -> (LayerNorm -> MoELayer) + residual -> Linear`` on ``(N, in_features)``.

    ``aux_loss`` is the MoE layer's load-balancing loss from the last forward.

    >>> import torch
    >>> model = MoEClassifier(in_features=20, num_classes=3)
    >>> model(torch.randn(8, 20)).shape
    torch.Size([8, 3])
    """

    def __init__(
        self,
        in_features: int = 32,
        num_classes: int = 10,
        d_model: int = 64,
        d_hidden: int = 128,
        num_experts: int = 4,
        top_k: int = 2,
        capacity_factor: float | None = None,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.moe = MoELayer(d_model, d_hidden, num_experts, top_k, capacity_factor)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(x)
        hidden = hidden + self.moe(self.norm(hidden))
        return self.head(hidden)

    @property
    def aux_loss(self) -> torch.Tensor | None:
        return self.moe.aux_loss
