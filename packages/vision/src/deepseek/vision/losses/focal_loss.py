"""Focal loss (Lin et al., 2017) with ``monai.losses.FocalLoss``'s arguments and values.

``FL = -alpha_t * (1 - p_t) ** gamma * log(p_t)`` per voxel and channel, from logits:
sigmoid (binary / multi-label, default) or softmax over channels (``use_softmax=True``).
Computed in fp32, also under fp16/bf16 autocast.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepseek.vision.losses.utils import check_reduction, fp32, one_hot_target

__all__ = ["FocalLoss"]


class FocalLoss(nn.Module):
    """Focal loss on logits of shape ``(N, C, *spatial)``.

    Args:
        include_background: keep channel 0.
        to_onehot_y: one-hot encode class-index targets ``(N, 1, *spatial)``.
        gamma: focusing exponent (0 gives cross entropy).
        alpha: balance factor: sigmoid form weighs positives by ``alpha`` and negatives by
            ``1 - alpha``; softmax form weighs background by ``1 - alpha``, others by ``alpha``.
        weight: per-class weights (a number or one per kept channel).
        reduction: ``"mean"`` over all elements, ``"sum"`` (of per-channel spatial means,
            as MONAI does) or ``"none"`` (elementwise).
        use_softmax: softmax focal loss instead of the sigmoid one.

    >>> import torch
    >>> loss_fn = FocalLoss(to_onehot_y=True, gamma=2.0)
    >>> logits = torch.zeros(1, 2, 4, 4)   # p = 0.5 everywhere
    >>> round(loss_fn(logits, torch.zeros(1, 1, 4, 4)).item(), 4)  # 0.25 * log(2)
    0.1733
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        weight: Sequence[float] | float | torch.Tensor | None = None,
        reduction: str = "mean",
        use_softmax: bool = False,
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma!r}")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.gamma = float(gamma)
        self.alpha = alpha
        self.weight = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        if self.weight is not None and (self.weight.ndim > 1 or (self.weight < 0).any()):
            raise ValueError(
                f"weight must be a number or a sequence of numbers >= 0, got {weight!r}"
            )
        self.reduction = reduction
        self.use_softmax = use_softmax

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with fp32(input):
            return self._forward(input.float(), target)

    def _forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, torch.Tensor) or input.dim() < 3:
            raise ValueError("FocalLoss: input must be a tensor of shape (N, C, *spatial)")
        channels = input.shape[1]
        if self.to_onehot_y:
            if channels == 1:
                warnings.warn("single channel prediction, to_onehot_y=True ignored", stacklevel=3)
            else:
                target = one_hot_target("FocalLoss", target, input)
        target = target.float()
        if not self.include_background:
            if channels == 1:
                warnings.warn(
                    "single channel prediction, include_background=False ignored", stacklevel=3
                )
            else:
                input, target = input[:, 1:], target[:, 1:]
        if target.shape != input.shape:
            raise ValueError(
                f"FocalLoss: target shape {tuple(target.shape)} differs from input shape "
                f"{tuple(input.shape)}; for class-index targets pass to_onehot_y=True"
            )
        shape = [-1] + [1] * (input.dim() - 2)
        alpha = self.alpha
        if self.use_softmax:
            if not self.include_background and isinstance(alpha, (int, float)):
                warnings.warn(
                    "include_background=False: scalar alpha ignored with softmax", stacklevel=3
                )
                alpha = None
            log_p = input.log_softmax(1)
            loss = -(1 - log_p.exp()).pow(self.gamma) * log_p * target
            if alpha is not None:
                a = torch.as_tensor(alpha, dtype=loss.dtype, device=loss.device)
                if a.ndim == 0:
                    a = torch.cat([1 - a.view(1), a.view(1).expand(target.shape[1] - 1)])
                loss = _check_len("alpha", a, target.shape[1]).view(shape) * loss
        else:
            # -log(sigmoid) terms written with logsigmoid: no overflow for large logits.
            loss = input - input * target - F.logsigmoid(input)
            loss = (F.logsigmoid(-input * (target * 2 - 1)) * self.gamma).exp() * loss
            if alpha is not None:
                a = torch.as_tensor(alpha, dtype=loss.dtype, device=loss.device)
                if a.ndim == 0:
                    factor = target * a + (1 - target) * (1 - a)
                else:
                    a = _check_len("alpha", a, target.shape[1]).view(shape)
                    factor = torch.where(target == 1, a, torch.ones_like(a))
                loss = factor * loss
        if self.weight is not None:
            w = self.weight.to(loss)
            if w.ndim:
                w = _check_len("weight", w, loss.shape[1]).view(shape)
            loss = loss * w
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.mean(dim=list(range(2, loss.dim()))).sum()
        return loss


def _check_len(name: str, values: torch.Tensor, channels: int) -> torch.Tensor:
    if values.shape[0] != channels:
        raise ValueError(
            f"FocalLoss: {name} has {values.shape[0]} entries but {channels} channels are "
            "scored (with include_background=False, leave class 0 out)"
        )
    return values
