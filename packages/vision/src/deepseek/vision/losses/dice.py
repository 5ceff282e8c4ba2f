"""Soft Dice loss for 2-D and 3-D segmentation (Milletari et al., 2016).

For each sample and class, ``dice = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)``
over the spatial positions, and the loss is ``1 - dice`` averaged over samples and classes.
``smooth`` in both numerator and denominator makes a class absent from both prediction and
target score a perfect 1 instead of 0/0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("mean", "sum", "none")


class DiceLoss(nn.Module):
    """Dice loss on ``(N, C, *spatial)`` predictions.

    Args:
        softmax: apply a softmax over the class dimension first (``input`` holds logits);
            with ``False``, ``input`` must already hold probabilities.
        include_background: keep channel 0 in the average; ``False`` drops it.
        smooth: added to the numerator and the denominator of every Dice ratio.
        reduction: ``"mean"`` (default), ``"sum"``, or ``"none"`` for the ``(N, C)`` losses.

    ``target`` is either class indices, shape ``(N, *spatial)`` or ``(N, 1, *spatial)``
    with an integer dtype, or one-hot / per-class masks of the same shape as ``input``.

    >>> import torch
    >>> loss_fn = DiceLoss(softmax=True)
    >>> logits = torch.randn(2, 3, 8, 8, 8)          # (N, C, D, H, W)
    >>> labels = torch.randint(0, 3, (2, 8, 8, 8))
    >>> loss = loss_fn(logits, labels)
    >>> 0.0 <= loss.item() <= 1.0
    True
    """

    def __init__(
        self,
        softmax: bool = True,
        include_background: bool = True,
        smooth: float = 1e-5,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or smooth < 0:
            raise ValueError(f"smooth must be a number >= 0, got {smooth!r}")
        self.softmax = softmax
        self.include_background = include_background
        self.smooth = float(smooth)
        self.reduction = reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, torch.Tensor) or not input.is_floating_point() or input.dim() < 3:
            got = (
                f"a {input.dtype} tensor of shape {tuple(input.shape)}"
                if isinstance(input, torch.Tensor)
                else type(input).__name__
            )
            raise ValueError(
                f"DiceLoss input must be a floating tensor of shape (N, C, *spatial), got {got}"
            )
        channels = input.shape[1]
        if self.softmax and channels < 2:
            raise ValueError(
                "DiceLoss(softmax=True) needs at least 2 channels (background and foreground); "
                "for a single-channel output pass probabilities with softmax=False"
            )
        if not self.include_background and channels < 2:
            raise ValueError("include_background=False needs at least 2 channels to keep one")
        probs = input.softmax(dim=1) if self.softmax else input
        onehot = self._one_hot(target, input).to(probs.dtype)
        if not self.include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]

        spatial = tuple(range(2, input.dim()))
        intersection = (probs * onehot).sum(spatial)
        total = probs.sum(spatial) + onehot.sum(spatial)
        loss = 1.0 - (2.0 * intersection + self.smooth) / (total + self.smooth)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    @staticmethod
    def _one_hot(target: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"DiceLoss target must be a tensor, got {type(target).__name__}")
        if target.shape == input.shape:
            return target  # already one-hot / per-class masks
        channels, expected = input.shape[1], (input.shape[0], *input.shape[2:])
        if target.dim() == input.dim() and target.shape[1] == 1:
            target = target.squeeze(1)
        if target.shape != expected:
            raise ValueError(
                f"DiceLoss target shape {tuple(target.shape)} does not fit input "
                f"{tuple(input.shape)}: pass class indices of shape {expected} (or with a "
                f"channel of 1) or one-hot masks of shape {tuple(input.shape)}"
            )
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(
                f"DiceLoss class-index targets must have an integer dtype, got {target.dtype}; "
                "use target.long()"
            )
        if target.numel() and (target.min() < 0 or target.max() >= channels):
            raise ValueError(
                f"DiceLoss target holds class indices in [{int(target.min())}, "
                f"{int(target.max())}], outside [0, {channels}) for {channels} channels"
            )
        return F.one_hot(target.long(), channels).movedim(-1, 1)
