"""Dice-based segmentation losses with MONAI's argument names, defaults and values.

For each sample and channel (or over the whole batch with ``batch=True``), with ``p`` the
prediction after the optional activation and ``t`` the (one-hot) target::

    dice    = 1 - (2 * sum(p * t) + smooth_nr) / (sum(p) + sum(t) + smooth_dr)
    jaccard = 1 - (2 * sum(p * t) + smooth_nr) / (2 * (sum(p) + sum(t) - sum(p * t)) + smooth_dr)

``squared_pred=True`` uses ``sum(p**2) + sum(t**2)`` in the denominator. Everything is
computed in fp32, also inside fp16/bf16 autocast, so sums over large volumes do not
overflow or lose precision.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepseek.vision.losses.focal_loss import FocalLoss
from deepseek.vision.losses.utils import check_reduction, fp32, one_hot_target

__all__ = ["DiceCELoss", "DiceFocalLoss", "DiceLoss"]


class DiceLoss(nn.Module):
    """Soft Dice loss on ``(N, C, *spatial)`` predictions (Milletari et al., 2016).

    Same arguments and defaults as ``monai.losses.DiceLoss``: by default ``input`` holds
    probabilities (no activation) and ``target`` has the same shape; pass
    ``softmax=True`` / ``sigmoid=True`` for logits and ``to_onehot_y=True`` for class-index
    targets of shape ``(N, 1, *spatial)``.

    Args:
        include_background: keep channel 0; ``False`` drops it from prediction and target.
        to_onehot_y: one-hot encode ``target`` (class indices) to ``input.shape[1]`` classes.
        sigmoid: apply a sigmoid to ``input`` first (binary / multi-label).
        softmax: apply a softmax over channels first (multi-class).
        other_act: any other activation callable applied to ``input``.
        squared_pred: squared terms in the denominator (V-Net's formulation).
        jaccard: soft Jaccard (IoU) instead of Dice.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(N, C, 1, ...)``).
        smooth_nr, smooth_dr: added to the numerator / denominator.
        batch: sum over the batch before dividing (one Dice per channel).
        weight: per-class weights (a number or one per channel kept).

    >>> import torch
    >>> loss_fn = DiceLoss(to_onehot_y=True, softmax=True)
    >>> logits = torch.randn(2, 3, 8, 8, 8)          # (N, C, D, H, W)
    >>> labels = torch.randint(0, 3, (2, 1, 8, 8, 8))
    >>> 0.0 <= loss_fn(logits, labels).item() <= 1.0
    True
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable[[torch.Tensor], torch.Tensor] | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | float | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
            raise ValueError("DiceLoss: pick at most one of sigmoid=True, softmax=True, other_act")
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be callable, got {type(other_act).__name__}")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.squared_pred = squared_pred
        self.jaccard = jaccard
        self.reduction = reduction
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch = batch
        self.class_weight = _class_weight(weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with fp32(input):
            return self._forward(input.float(), target)

    def _forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_input("DiceLoss", input)
        if self.sigmoid:
            input = torch.sigmoid(input)
        channels = input.shape[1]
        if self.softmax:
            if channels == 1:
                warnings.warn("single channel prediction, softmax=True ignored", stacklevel=3)
            else:
                input = torch.softmax(input, 1)
        if self.other_act is not None:
            input = self.other_act(input)
        if self.to_onehot_y:
            if channels == 1:
                warnings.warn("single channel prediction, to_onehot_y=True ignored", stacklevel=3)
            else:
                target = one_hot_target("DiceLoss", target, input)
        target = target.to(input.dtype)
        if not self.include_background:
            if channels == 1:
                warnings.warn(
                    "single channel prediction, include_background=False ignored", stacklevel=3
                )
            else:
                input, target = input[:, 1:], target[:, 1:]
        if target.shape != input.shape:
            raise ValueError(
                f"DiceLoss: target shape {tuple(target.shape)} differs from input shape "
                f"{tuple(input.shape)}; for class-index targets of shape (N, 1, *spatial) pass "
                "to_onehot_y=True"
            )
        axes = list(range(2, input.dim()))
        if self.batch:
            axes = [0, *axes]
        intersection = torch.sum(input * target, dim=axes)
        if self.squared_pred:
            denominator = torch.sum(input * input, dim=axes) + torch.sum(target * target, dim=axes)
        else:
            denominator = torch.sum(input, dim=axes) + torch.sum(target, dim=axes)
        if self.jaccard:
            denominator = 2.0 * (denominator - intersection)
        f = 1.0 - (2.0 * intersection + self.smooth_nr) / (denominator + self.smooth_dr)
        if self.class_weight is not None and target.shape[1] != 1:
            weight = self.class_weight.to(f)
            if weight.ndim and weight.shape[0] != target.shape[1]:
                raise ValueError(
                    f"DiceLoss: weight has {weight.shape[0]} entries but {target.shape[1]} "
                    "channels are scored (with include_background=False, leave class 0 out)"
                )
            f = f * weight
        if self.reduction == "mean":
            return f.mean()
        if self.reduction == "sum":
            return f.sum()
        return f.view(*f.shape[:2], *([1] * len(axes if not self.batch else axes[1:])))


class DiceFocalLoss(nn.Module):
    """``lambda_dice * DiceLoss + lambda_focal * FocalLoss`` (``monai.losses.DiceFocalLoss``).

    ``sigmoid``/``softmax``/``other_act``, ``squared_pred``, ``jaccard``, ``smooth_*`` and
    ``batch`` configure the Dice part; ``gamma`` and ``alpha`` the focal part, which always
    takes logits (sigmoid focal, as MONAI does); ``weight`` and ``reduction`` both.

    >>> import torch
    >>> loss_fn = DiceFocalLoss(to_onehot_y=True, softmax=True, gamma=2.0)
    >>> logits = torch.randn(2, 2, 16, 16, 16, requires_grad=True)
    >>> loss_fn(logits, torch.randint(0, 2, (2, 1, 16, 16, 16))).backward()
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable[[torch.Tensor], torch.Tensor] | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        gamma: float = 2.0,
        weight: Sequence[float] | float | torch.Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_focal: float = 1.0,
        alpha: float | None = None,
    ) -> None:
        super().__init__()
        _check_lambdas(lambda_dice=lambda_dice, lambda_focal=lambda_focal)
        self.dice = DiceLoss(
            include_background=include_background,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            squared_pred=squared_pred,
            jaccard=jaccard,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            weight=weight,
        )
        self.focal = FocalLoss(
            include_background=include_background,
            gamma=gamma,
            weight=weight,
            alpha=alpha,
            reduction=reduction,
        )
        self.to_onehot_y = to_onehot_y
        self.lambda_dice = float(lambda_dice)
        self.lambda_focal = float(lambda_focal)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with fp32(input):
            input = input.float()
            _check_input("DiceFocalLoss", input)
            target = _target_channels("DiceFocalLoss", input, target)
            if self.to_onehot_y:
                if input.shape[1] == 1:
                    warnings.warn(
                        "single channel prediction, to_onehot_y=True ignored", stacklevel=2
                    )
                else:
                    target = one_hot_target("DiceFocalLoss", target, input)
            return self.lambda_dice * self.dice(input, target) + self.lambda_focal * self.focal(
                input, target
            )


class DiceCELoss(nn.Module):
    """``lambda_dice * DiceLoss + lambda_ce * cross entropy`` (``monai.losses.DiceCELoss``).

    Cross entropy takes logits: softmax cross entropy for several channels (class-index or
    one-hot/probability targets), binary cross entropy with logits for one channel.
    ``weight`` is the class weight of both parts; ``reduction`` is ``"mean"`` or ``"sum"``.

    >>> import torch
    >>> loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    >>> logits = torch.randn(2, 3, 8, 8)
    >>> float(loss_fn(logits, torch.randint(0, 3, (2, 1, 8, 8)))) > 0
    True
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable[[torch.Tensor], torch.Tensor] | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: torch.Tensor | Sequence[float] | None = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"DiceCELoss reduction must be 'mean' or 'sum', got {reduction!r}")
        _check_lambdas(lambda_dice=lambda_dice, lambda_ce=lambda_ce)
        weight_t = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        dice_weight = weight_t[1:] if weight_t is not None and not include_background else weight_t
        self.dice = DiceLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            squared_pred=squared_pred,
            jaccard=jaccard,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            weight=dice_weight,
        )
        self.register_buffer("ce_weight", weight_t, persistent=False)
        self.reduction = reduction
        self.label_smoothing = float(label_smoothing)
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with fp32(input):
            input = input.float()
            _check_input("DiceCELoss", input)
            target = _target_channels("DiceCELoss", input, target)
            dice = self.dice(input, target)
            weight = None if self.ce_weight is None else self.ce_weight.to(input.device)
            if input.shape[1] == 1:
                ce = F.binary_cross_entropy_with_logits(
                    input, target.float(), pos_weight=weight, reduction=self.reduction
                )
            else:
                if target.shape[1] == 1:
                    one_hot_target("DiceCELoss", target, input)  # validates the class range
                    ce_target = target.squeeze(1).long()
                else:
                    ce_target = target.float()
                ce = F.cross_entropy(
                    input,
                    ce_target,
                    weight=weight,
                    reduction=self.reduction,
                    label_smoothing=self.label_smoothing,
                )
            return self.lambda_dice * dice + self.lambda_ce * ce


def _class_weight(weight: Sequence[float] | float | torch.Tensor | None) -> torch.Tensor | None:
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=torch.float32)
    if w.ndim > 1 or not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(
            f"weight must be a number or a 1-D sequence of numbers >= 0, got {weight!r}"
        )
    return w


def _check_input(name: str, input: torch.Tensor) -> None:
    if not isinstance(input, torch.Tensor) or input.dim() < 3:
        got = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f"{name}: input must be a tensor of shape (N, C, *spatial), got {got}")


def _target_channels(name: str, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: target must be a tensor, got {type(target).__name__}")
    if target.dim() != input.dim():
        raise ValueError(
            f"{name}: input {tuple(input.shape)} and target {tuple(target.shape)} have different "
            "numbers of dimensions; pass class-index targets as (N, 1, *spatial)"
        )
    if target.shape[1] not in (1, input.shape[1]):
        raise ValueError(
            f"{name}: target has {target.shape[1]} channels; expected 1 (class indices) or "
            f"{input.shape[1]} (one-hot), input {tuple(input.shape)}"
        )
    return target


def _check_lambdas(**lambdas: float) -> None:
    for key, value in lambdas.items():
        if not value >= 0.0:
            raise ValueError(f"{key} must be >= 0, got {value!r}")
