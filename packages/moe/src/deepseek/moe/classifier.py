"""``moe-mlp``: a tiny classifier built around one MoE layer, for demos and tests."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepseek.moe.layer import MoELayer


class MoEClassifier(nn.Module):
    """``Linear -> (LayerNorm -> MoELayer) + residual -> Linear`` on ``(N, in_features)``.

    ``aux_loss`` is the MoE layer's load-balancing loss from the last forward. The
    Trainer trains it through ``training_step((inputs, labels))``: cross-entropy plus
    ``aux_loss_coef * aux_loss`` (and the z-loss with ``z_loss_coef``), so the balancing
    loss really reaches the gradients. Validation with a ``loss_fn`` reports the plain
    cross-entropy.

    >>> import torch
    >>> model = MoEClassifier(in_features=20, num_classes=3)
    >>> model(torch.randn(8, 20)).shape
    torch.Size([8, 3])
    >>> loss = model.training_step((torch.randn(8, 20), torch.randint(0, 3, (8,))))
    >>> loss.shape
    torch.Size([])
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
        aux_loss_coef: float = 0.01,
        z_loss_coef: float = 0.0,
        **moe_options: Any,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.moe = MoELayer(d_model, d_hidden, num_experts, top_k, capacity_factor, **moe_options)
        self.head = nn.Linear(d_model, num_classes)
        # Read by deepseek.moe.balancing.MoELoadBalancing, which may change them.
        self.aux_loss_coefs = {
            "aux_loss": aux_loss_coef,
            "device_aux_loss": 0.0,
            "z_loss": z_loss_coef,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(x)
        hidden = hidden + self.moe(self.norm(hidden))
        return self.head(hidden)

    def training_step(self, batch: Any) -> torch.Tensor:
        """Cross-entropy of ``(inputs, labels)`` plus the weighted balancing losses."""
        inputs, labels = batch
        loss = F.cross_entropy(self(inputs), labels)
        from deepseek.moe.balancing import auxiliary_loss

        coefs = {f"{k}_coef": v for k, v in self.aux_loss_coefs.items()}
        return loss + auxiliary_loss(self, **coefs)

    @property
    def aux_loss(self) -> torch.Tensor | None:
        return self.moe.aux_loss
