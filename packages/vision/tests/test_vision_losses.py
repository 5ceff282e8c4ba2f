"""Losses: hand-computed values, equality with MONAI on the same inputs (skipped without
monai), fp32 inside autocast, deep supervision, bad inputs."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from deepseek.vision.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
)


def test_dice_matches_hand_computation():
    background = torch.tensor([[0.9, 0.2], [0.6, 0.1]])
    probs = torch.stack([background, 1 - background])[None]  # (1, 2, 2, 2)
    labels = torch.tensor([[[[0, 1], [1, 1]]]])  # (1, 1, 2, 2)
    # Class 0: target at one pixel (p=0.9); sum p = 1.8, sum t = 1.
    # Class 1: target at three pixels (p=0.8, 0.4, 0.9); sum p = 2.2, sum t = 3.
    dice0, dice1 = 2 * 0.9 / (1.8 + 1), 2 * (0.8 + 0.4 + 0.9) / (2.2 + 3)
    loss = DiceLoss(to_onehot_y=True, smooth_nr=0.0, smooth_dr=0.0)
    assert loss(probs, labels).item() == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-6)
    fg_only = DiceLoss(to_onehot_y=True, include_background=False, smooth_nr=0, smooth_dr=0)
    assert fg_only(probs, labels).item() == pytest.approx(1 - dice1, rel=1e-6)
    smoothed = DiceLoss(to_onehot_y=True, smooth_nr=1.0, smooth_dr=1.0, reduction="none")
    expected = torch.tensor([1 - (1.8 + 1) / (2.8 + 1), 1 - (4.2 + 1) / (5.2 + 1)]).view(1, 2, 1, 1)
    torch.testing.assert_close(smoothed(probs, labels), expected)
    # Jaccard: 1 - I / (P + T - I) (with no smoothing).
    jac = DiceLoss(to_onehot_y=True, jaccard=True, smooth_nr=0, smooth_dr=0, reduction="none")
    iou1 = 2.1 / (2.2 + 3 - 2.1)
    assert jac(probs, labels)[0, 1].item() == pytest.approx(1 - iou1, rel=1e-6)


def test_focal_matches_hand_computation():
    # Sigmoid focal: one logit x=0 (p=0.5) with target 1 -> 0.5**gamma * log 2.
    x, t = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    assert FocalLoss(gamma=2.0)(x, t).item() == pytest.approx(0.25 * math.log(2), rel=1e-6)
    # logit 2, target 1: p = sigmoid(2); FL = (1 - p)^2 * -log p; alpha=0.25 weighs it.
    x2 = torch.full((1, 1, 1, 1), 2.0)
    p = 1 / (1 + math.exp(-2))
    expected = 0.25 * (1 - p) ** 2 * -math.log(p)
    assert FocalLoss(gamma=2.0, alpha=0.25)(x2, t).item() == pytest.approx(expected, rel=1e-6)
    # gamma=0 is binary cross entropy.
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 2, (2, 3, 4, 4)).float()
    torch.testing.assert_close(
        FocalLoss(gamma=0.0)(logits, target),
        F.binary_cross_entropy_with_logits(logits, target),
    )
    # Softmax focal with gamma=0 is cross entropy (summed over channels, averaged over all).
    labels = torch.randint(0, 3, (2, 1, 4, 4))
    ce = F.cross_entropy(logits, labels[:, 0]) / 3
    torch.testing.assert_close(
        FocalLoss(to_onehot_y=True, gamma=0, use_softmax=True)(logits, labels), ce
    )


def test_combined_losses_are_weighted_sums_of_their_parts():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 5, 6, 7), torch.randint(0, 3, (2, 1, 5, 6, 7))
    dice = DiceLoss(to_onehot_y=True, softmax=True)(x, y)
    focal = FocalLoss(to_onehot_y=True, gamma=2.0)(x, y)
    both = DiceFocalLoss(to_onehot_y=True, softmax=True, lambda_dice=0.3, lambda_focal=2.0)
    torch.testing.assert_close(both(x, y), 0.3 * dice + 2.0 * focal)
    ce = F.cross_entropy(x, y[:, 0])
    torch.testing.assert_close(DiceCELoss(to_onehot_y=True, softmax=True)(x, y), dice + ce)
    # Single channel: binary cross entropy with logits.
    xb, yb = torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 1, 4, 4))
    expected = DiceLoss(sigmoid=True)(xb, yb) + F.binary_cross_entropy_with_logits(xb, yb.float())
    torch.testing.assert_close(DiceCELoss(sigmoid=True)(xb, yb), expected)


def test_perfect_prediction_scores_zero_dice_loss():
    labels = torch.randint(0, 3, (2, 1, 4, 4, 4))
    onehot = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    assert DiceLoss(to_onehot_y=True)(onehot, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceLoss(to_onehot_y=True, softmax=True)(onehot * 50, labels).item() == pytest.approx(
        0.0, abs=1e-5
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_compute_in_fp32_under_autocast(dtype):
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 16, 16, 16) * 20, torch.randint(0, 3, (2, 1, 16, 16, 16))
    ref = DiceFocalLoss(to_onehot_y=True, softmax=True)(x, y)
    with torch.autocast("cpu", dtype=dtype):
        out = DiceFocalLoss(to_onehot_y=True, softmax=True)(x.to(dtype), y)
    assert out.dtype == torch.float32
    # Only the input's rounding to low precision differs, never the loss arithmetic.
    ref_rounded = DiceFocalLoss(to_onehot_y=True, softmax=True)(x.to(dtype).float(), y)
    torch.testing.assert_close(out, ref_rounded)
    assert abs(out.item() - ref.item()) < 0.05


def test_deep_supervision_loss_weighs_heads():
    torch.manual_seed(0)
    base = DiceLoss(to_onehot_y=True, softmax=True)
    heads = [torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4)]
    y = torch.randint(0, 2, (1, 1, 8, 8))
    small = F.interpolate(y.float(), size=(4, 4), mode="nearest").long()
    expected = (base(heads[0], y) + 0.5 * base(heads[1], y) + 0.25 * base(heads[2], small)) / 1.75
    torch.testing.assert_close(DeepSupervisionLoss(base)(heads, y), expected)
    torch.testing.assert_close(DeepSupervisionLoss(base)(heads[0], y), base(heads[0], y))


@pytest.mark.parametrize(
    ("loss_fn", "x", "y", "match"),
    [
        (
            DiceLoss(to_onehot_y=True),
            torch.randn(2, 3, 4, 4),
            torch.full((2, 1, 4, 4), 3),
            r"\[3, 3\], outside \[0, 3\)",
        ),
        (
            DiceLoss(to_onehot_y=True),
            torch.randn(2, 3, 4, 4),
            torch.zeros(2, 1, 4, 5).long(),
            "does not fit",
        ),
        (DiceLoss(), torch.randn(2, 3, 4, 4), torch.zeros(2, 1, 4, 4), "to_onehot_y=True"),
        (DiceLoss(), torch.randn(2, 3), torch.zeros(2, 3), "spatial"),
        (
            FocalLoss(to_onehot_y=True),
            torch.randn(2, 3, 4, 4),
            torch.full((2, 1, 4, 4), -1),
            "outside",
        ),
        (DiceFocalLoss(), torch.randn(2, 3, 4, 4), torch.zeros(2, 2, 4, 4), "2 channels"),
        (DiceCELoss(), torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4).long(), "dimensions"),
        (
            FocalLoss(weight=[1.0, 2.0]),
            torch.randn(2, 3, 4, 4),
            torch.zeros(2, 3, 4, 4),
            "weight has 2",
        ),
    ],
)
def test_losses_reject_bad_inputs(loss_fn, x, y, match):
    with pytest.raises(ValueError, match=match):
        loss_fn(x, y)


def test_losses_reject_bad_options():
    with pytest.raises(ValueError, match="reduction"):
        DiceLoss(reduction="avg")
    with pytest.raises(ValueError, match="at most one"):
        DiceLoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match="lambda_focal"):
        DiceFocalLoss(lambda_focal=-1)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        DiceCELoss(reduction="none")


# -- against MONAI -------------------------------------------------------------------------

monai_losses = pytest.importorskip("monai.losses", reason="monai is installed by the test extra")

DICE_OPTIONS = [
    dict(to_onehot_y=True, softmax=True),
    dict(to_onehot_y=True, sigmoid=True, include_background=False),
    dict(to_onehot_y=True, softmax=True, squared_pred=True, jaccard=True, batch=True),
    dict(to_onehot_y=True, softmax=True, reduction="none"),
    dict(to_onehot_y=True, softmax=True, reduction="sum", weight=[0.5, 1.0, 2.0]),
    dict(sigmoid=True, smooth_nr=0.0, smooth_dr=1e-6),  # multi-label, one-hot targets
]


def _inputs(options, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 6, 7, 5, generator=g) * 3
    if options.get("to_onehot_y"):
        y = torch.randint(0, 3, (2, 1, 6, 7, 5), generator=g)
    else:
        y = torch.randint(0, 2, (2, 3, 6, 7, 5), generator=g).float()
    return x, y


@pytest.mark.parametrize("options", DICE_OPTIONS, ids=str)
def test_dice_equals_monai(options):
    x, y = _inputs(options)
    ours, theirs = DiceLoss(**options)(x, y), monai_losses.DiceLoss(**options)(x, y)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs.as_subclass(torch.Tensor))


@pytest.mark.parametrize("options", DICE_OPTIONS, ids=str)
@pytest.mark.parametrize(
    "extra",
    [{}, {"alpha": 0.25}, {"use_softmax": True}, {"use_softmax": True, "alpha": 0.3}],
    ids=str,
)
def test_focal_equals_monai(options, extra):
    kept = {
        k: v
        for k, v in options.items()
        if k in ("to_onehot_y", "include_background", "reduction", "weight")
    }
    x, y = _inputs(options, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = FocalLoss(**kept, **extra)(x, y)
        theirs = monai_losses.FocalLoss(**kept, **extra)(x, y)
    torch.testing.assert_close(ours, theirs.as_subclass(torch.Tensor))


@pytest.mark.parametrize("options", DICE_OPTIONS, ids=str)
def test_dice_focal_and_dice_ce_equal_monai(options):
    x, y = _inputs(options, seed=2)
    kwargs = dict(options, gamma=1.5, lambda_dice=0.7, lambda_focal=1.3)
    ours = DiceFocalLoss(**kwargs)(x, y)
    torch.testing.assert_close(
        ours, monai_losses.DiceFocalLoss(**kwargs)(x, y).as_subclass(torch.Tensor)
    )
    if options.get("reduction", "mean") == "none":
        return
    kwargs = dict(options, lambda_ce=0.5)
    if "weight" in kwargs:
        kwargs["weight"] = torch.tensor(kwargs["weight"])
    ours = DiceCELoss(**kwargs)(x, y)
    torch.testing.assert_close(
        ours, monai_losses.DiceCELoss(**kwargs)(x, y).as_subclass(torch.Tensor)
    )
