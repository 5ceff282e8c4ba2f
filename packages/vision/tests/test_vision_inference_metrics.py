"""Sliding-window inference (vs MONAI and direct computation), Dice / IoU / HD95 metrics
(HD95 vs a scipy-based naive computation), overlay PNGs, metric registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepseek.plugins import registry
from deepseek.vision.inferers import sliding_window_inference
from deepseek.vision.metrics import (
    DiceMetric,
    HausdorffDistance95,
    IoUMetric,
    dice_score,
    hausdorff_distance_95,
    iou_score,
)
from deepseek.vision.visualize import save_overlay_png


def test_sliding_window_reproduces_a_pointwise_predictor_and_bounds_window_batches():
    vol = torch.randn(2, 2, 37, 21, 30)
    seen = []

    def predictor(x):
        seen.append(tuple(x.shape))
        return torch.cat([x * 3, -x], dim=1)

    out = sliding_window_inference(vol, (16, 16, 16), 3, predictor, overlap=0.5)
    torch.testing.assert_close(out, torch.cat([vol * 3, -vol], dim=1), atol=1e-5, rtol=1e-5)
    assert all(s[0] <= 3 and s[2:] == (16, 16, 16) for s in seen)
    # Inputs smaller than a window are padded, then cropped back.
    small = torch.randn(1, 1, 10, 12)
    out = sliding_window_inference(small, (16, 16), 1, lambda x: x + 1, mode="constant")
    torch.testing.assert_close(out, small + 1)


def test_sliding_window_rejects_bad_arguments():
    vol = torch.randn(1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="roi_size"):
        sliding_window_inference(vol, (8, 8), 1, lambda x: x)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(vol, 8, 1, lambda x: x, overlap=1.0)
    with pytest.raises(ValueError, match="mode"):
        sliding_window_inference(vol, 8, 1, lambda x: x, mode="linear")
    with pytest.raises(ValueError, match="predictor must map"):
        sliding_window_inference(vol, 8, 1, lambda x: x[:, :, :4])
    with pytest.raises(ValueError, match=r"\(N, C, D, H, W\)"):
        sliding_window_inference(torch.randn(16, 16), 8, 1, lambda x: x)


monai_inferers = pytest.importorskip("monai.inferers")


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "mode"),
    [
        ((2, 1, 40, 37, 29), (16, 16, 16), 0.25, "gaussian"),
        ((1, 1, 10, 40, 33), (16, 16, 16), 0.5, "constant"),
        ((1, 1, 50, 21, 64), (24, 16, 32), (0.6, 0.3, 0.5), "gaussian"),
        ((1, 2, 70, 45), (32, 32), 0.25, "gaussian"),
    ],
)
def test_sliding_window_equals_monai(shape, roi, overlap, mode):
    torch.manual_seed(0)
    conv = torch.nn.Conv3d if len(shape) == 5 else torch.nn.Conv2d
    net = conv(shape[1], 3, 3, padding=1)
    x = torch.randn(shape)
    with torch.no_grad():
        ours = sliding_window_inference(x, roi, 3, net, overlap=overlap, mode=mode)
        theirs = monai_inferers.sliding_window_inference(x, roi, 3, net, overlap=overlap, mode=mode)
    torch.testing.assert_close(ours, theirs.as_subclass(torch.Tensor), atol=1e-6, rtol=1e-5)


# -- metrics ----------------------------------------------------------------------------------


def test_dice_and_iou_by_hand():
    target = torch.tensor([[0, 1, 1, 1, 2, 2]])
    preds = torch.tensor([[0, 1, 1, 2, 2, 0]])
    # class 1: |P|=2, |T|=3, I=2; class 2: |P|=2, |T|=2, I=1.
    torch.testing.assert_close(dice_score(preds, target, 3), torch.tensor([[0.8, 0.5]]))
    torch.testing.assert_close(iou_score(preds, target, 3), torch.tensor([[2 / 3, 1 / 3]]))
    # A class absent from both is NaN and left out of the mean.
    empty = dice_score(torch.zeros(1, 4).long(), torch.zeros(1, 4).long(), 2)
    assert torch.isnan(empty).all()
    metric = DiceMetric(num_classes=3)
    metric.update(preds, target)
    metric.update(target, target)
    assert metric.compute().item() == pytest.approx((0.8 + 0.5 + 1 + 1) / 4)
    metric.reset()
    assert torch.isnan(metric.compute())
    logits = torch.nn.functional.one_hot(preds, 3).movedim(-1, 1).float()
    iou = IoUMetric()
    iou.update(logits, target[:, None])
    assert iou.compute().item() == pytest.approx(0.5)


scipy_ndimage = pytest.importorskip("scipy.ndimage")


def naive_hd95(pred: np.ndarray, target: np.ndarray, spacing) -> float:
    """The textbook computation: surfaces by scipy erosion, distances by an exact EDT."""

    def surface(mask):
        return mask & ~scipy_ndimage.binary_erosion(mask)

    ps, ts = surface(pred), surface(target)
    to_t = scipy_ndimage.distance_transform_edt(~ts, sampling=spacing)[ps]
    to_p = scipy_ndimage.distance_transform_edt(~ps, sampling=spacing)[ts]
    return max(np.percentile(to_t, 95), np.percentile(to_p, 95))


@pytest.mark.parametrize("spacing", [None, (2.0, 1.0, 0.5)])
def test_hd95_equals_scipy_naive_computation(spacing):
    from deepseek.vision.data import make_ct_phantom
    from deepseek.vision.transforms import RandomElasticDeformation

    _, label = make_ct_phantom((32, 32, 32), seed=4)
    label = label.long()
    warped = RandomElasticDeformation(alpha=3, sigma=4, prob=1.0)(
        label.float(), label, generator=torch.Generator().manual_seed(0)
    )[1]
    ours = hausdorff_distance_95(warped, label, num_classes=3, spacing=spacing)
    for cls in (1, 2):
        expected = naive_hd95(
            (warped[0] == cls).numpy(), (label[0] == cls).numpy(), spacing or (1.0, 1.0, 1.0)
        )
        assert ours[0, cls - 1].item() == pytest.approx(expected, rel=1e-5)
    metric = HausdorffDistance95(num_classes=3, spacing=spacing)
    metric.update(warped, label)
    assert metric.compute().item() == pytest.approx(ours.mean().item(), rel=1e-6)
    assert metric.higher_is_better is False


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        dice_score(torch.zeros(1, 4).long(), torch.zeros(1, 5).long(), 2)


def test_metrics_are_registered():
    metrics = registry("metric")
    assert {"dice", "iou", "hd95"} <= set(metrics.names())
    assert metrics.provider("dice").distribution == "deepseek-vision"
    assert isinstance(metrics.create("dice", num_classes=3), DiceMetric)


def test_overlay_png(tmp_path):
    from matplotlib.image import imread

    from deepseek.vision.data import make_ct_phantom

    image, label = make_ct_phantom((24, 24, 24), seed=0)
    path = save_overlay_png(tmp_path / "o.png", image, label, label.flip(-1), title="case 0")
    png = imread(path)
    assert png.ndim == 3 and png.shape[1] > 2 * png.shape[0]  # three panels side by side
    with pytest.raises(ValueError, match="differs from image shape"):
        save_overlay_png(tmp_path / "bad.png", image, label[..., :5])
