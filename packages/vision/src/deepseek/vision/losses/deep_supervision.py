"""Loss over every head of a deeply supervised network (UNet++ ``deep_supervision=True``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeepSupervisionLoss"]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss(head, target)`` over a list of heads.

    A single tensor is scored as is, so the same loss serves training (a list of heads)
    and validation (the final head only). Heads of a smaller spatial size than ``target``
    are scored against a nearest-neighbour downsampled target. ``weights`` default to
    ``1, 1/2, 1/4, ...`` (the first head, the final output, counts most), normalised to sum 1.

    >>> import torch
    >>> from deepseek.vision.losses import DiceLoss
    >>> loss_fn = DeepSupervisionLoss(DiceLoss(to_onehot_y=True, softmax=True))
    >>> heads = [torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)]
    >>> float(loss_fn(heads, torch.randint(0, 2, (1, 1, 8, 8)))) > 0
    True
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(
        self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        if isinstance(input, torch.Tensor):
            return self.loss(input, target)
        heads = list(input)
        if not heads:
            raise ValueError("DeepSupervisionLoss got an empty list of heads")
        weights = self.weights or [0.5**i for i in range(len(heads))]
        if len(weights) != len(heads):
            raise ValueError(f"DeepSupervisionLoss: {len(weights)} weights for {len(heads)} heads")
        total = sum(weights)
        out = 0.0
        for w, head in zip(weights, heads):
            t = target
            if head.shape[2:] != target.shape[2:]:
                t = F.interpolate(target.float(), size=head.shape[2:], mode="nearest").to(
                    target.dtype
                )
            out = out + (w / total) * self.loss(head, t)
        return out
