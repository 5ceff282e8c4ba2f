"""Segmentation metrics: Dice, IoU and the 95th-percentile Hausdorff distance.

Each metric is both a function of one batch and an accumulating object with the
``update(preds, target)`` / ``compute()`` / ``reset()`` interface: ``preds`` are logits or
probabilities ``(N, C, *spatial)`` (argmax over channels) or class-index maps, ``target``
class indices ``(N, *spatial)`` or ``(N, 1, *spatial)``. Scores are per sample and class;
a class absent from both prediction and target (Dice/IoU) or from either (HD95) gives NaN
and is left out of the mean, as MONAI's ``ignore_empty`` does. ``update`` keeps running sums
on the device; only ``compute`` reads them on the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "DiceMetric",
    "HausdorffDistance95",
    "IoUMetric",
    "dice_score",
    "hausdorff_distance_95",
    "iou_score",
    "surface_mask",
]


def _labels(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    if target.dim() == preds.dim() and target.shape[1] == 1:
        target = target[:, 0]
    if preds.is_floating_point() and preds.dim() == target.dim() + 1:
        num_classes = num_classes or preds.shape[1]
        preds = preds.argmax(1)
    elif preds.dim() == target.dim() + 1 and preds.shape[1] == 1:
        preds = preds[:, 0]
    if preds.shape != target.shape:
        raise ValueError(
            f"metric: prediction {tuple(preds.shape)} and target {tuple(target.shape)} do not "
            "match; pass logits (N, C, *spatial) or class maps of the target's shape"
        )
    if num_classes is None:
        raise ValueError("metric: pass num_classes when predictions are class-index maps")
    return preds.long(), target.long(), num_classes


def _overlap(preds, target, num_classes, include_background):
    preds, target, c = _labels(preds, target, num_classes)
    p = F.one_hot(preds.clamp(0, c - 1), c).movedim(-1, 1).flatten(2).float()
    t = F.one_hot(target.clamp(0, c - 1), c).movedim(-1, 1).flatten(2).float()
    if not include_background:
        p, t = p[:, 1:], t[:, 1:]
    inter = (p * t).sum(-1)
    return inter, p.sum(-1), t.sum(-1)


def dice_score(
    preds: torch.Tensor,
    target: torch.Tensor,
    num_classes: int | None = None,
    include_background: bool = False,
) -> torch.Tensor:
    """Dice per sample and class ``(N, C')``; NaN where the class is absent from both.

    >>> import torch
    >>> t = torch.tensor([[0, 1, 1, 0]]); p = torch.tensor([[0, 1, 0, 0]])
    >>> round(dice_score(p, t, num_classes=2).item(), 4)   # 2*1 / (1 + 2)
    0.6667
    """
    inter, ps, ts = _overlap(preds, target, num_classes, include_background)
    denom = ps + ts
    return torch.where(
        denom > 0, 2 * inter / denom.clamp_min(1), torch.full_like(denom, float("nan"))
    )


def iou_score(
    preds: torch.Tensor,
    target: torch.Tensor,
    num_classes: int | None = None,
    include_background: bool = False,
) -> torch.Tensor:
    """Intersection over union per sample and class ``(N, C')``; NaN where absent from both."""
    inter, ps, ts = _overlap(preds, target, num_classes, include_background)
    union = ps + ts - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, float("nan")))


def surface_mask(mask: torch.Tensor) -> torch.Tensor:
    """Boundary voxels of a boolean ``(*spatial)`` mask: the mask minus its erosion by the
    face-connected cross (outside the volume counts as background, like scipy's
    ``binary_erosion``)."""
    k = mask.dim()
    padded = F.pad(mask[None, None].float(), [1, 1] * k)[0, 0].bool()
    eroded = mask.clone()
    for axis in range(k):
        for shift in (0, 2):
            index = [slice(1, -1)] * k
            index[axis] = slice(shift, shift + mask.shape[axis])
            eroded &= padded[tuple(index)]
    return mask & ~eroded


def _directed_percentile(
    a: torch.Tensor, b: torch.Tensor, q: float, chunk: int = 4096
) -> torch.Tensor:
    """q-th percentile over points of ``a`` of the distance to the nearest point of ``b``."""
    nearest = torch.cat([torch.cdist(a[i : i + chunk], b).amin(1) for i in range(0, len(a), chunk)])
    return torch.quantile(nearest, q / 100.0)


def hausdorff_distance_95(
    preds: torch.Tensor,
    target: torch.Tensor,
    num_classes: int | None = None,
    include_background: bool = False,
    spacing: Sequence[float] | None = None,
    percentile: float = 95.0,
) -> torch.Tensor:
    """Symmetric percentile Hausdorff distance per sample and class ``(N, C')`` between the
    surfaces of prediction and target: ``max(P95(d(pred -> target)), P95(d(target -> pred)))``
    (MONAI's definition), in voxels or in ``spacing`` units; NaN if either is empty.

    >>> import torch
    >>> t = torch.zeros(1, 8, 8, dtype=torch.long); t[0, 2:6, 2:6] = 1
    >>> p = torch.zeros(1, 8, 8, dtype=torch.long); p[0, 3:7, 2:6] = 1   # shifted by 1
    >>> hausdorff_distance_95(p, t, num_classes=2).tolist()
    [[1.0]]
    """
    preds, target, c = _labels(preds, target, num_classes)
    k = target.dim() - 1
    scale = torch.tensor(
        spacing if spacing is not None else [1.0] * k, dtype=torch.float32, device=target.device
    )
    first = 0 if include_background else 1
    out = torch.full((target.shape[0], c - first), float("nan"), device=target.device)
    for n in range(target.shape[0]):
        for cls in range(first, c):
            ps = surface_mask(preds[n] == cls)
            ts = surface_mask(target[n] == cls)
            if not bool(ps.any()) or not bool(ts.any()):
                continue
            a = ps.nonzero().float() * scale
            b = ts.nonzero().float() * scale
            out[n, cls - first] = torch.maximum(
                _directed_percentile(a, b, percentile), _directed_percentile(b, a, percentile)
            )
    return out


try:  # core's accumulating-metric base: sums reduced across ranks in compute()
    from deepseek.metrics import Metric as _Base
    from deepseek.metrics import MetricUnavailable
except ImportError:  # pragma: no cover - older deepseek-core

    class _Base:  # type: ignore[no-redef]
        def __init__(self) -> None:
            self.reset()

        def compute(self) -> torch.Tensor:
            return self._compute({n: getattr(self, n) for n in self._sum_states})

    class MetricUnavailable(ValueError):  # type: ignore[no-redef]
        pass


class _MeanMetric(_Base):
    """Mean of per-sample, per-class scores over everything since ``reset()`` (NaNs, i.e.
    empty classes, skipped). The sum and count stay on the device until ``compute()``."""

    higher_is_better = True
    _sum_states = ("total", "count")

    def __init__(self, num_classes: int | None = None, include_background: bool = False) -> None:
        self.num_classes = num_classes
        self.include_background = include_background
        super().__init__()

    def scores(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if isinstance(preds, (list, tuple)):  # deep supervision heads: score the final one
            preds = preds[0]
        try:
            s = self.scores(preds.detach(), target.detach())
        except ValueError as exc:
            raise MetricUnavailable(str(exc)) from None
        valid = ~torch.isnan(s)
        device = s.device
        self.total = self.total.to(device) + torch.where(valid, s, torch.zeros_like(s)).sum()
        self.count = self.count.to(device) + valid.sum()

    def _compute(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        total, count = states["total"], states["count"]
        return torch.where(count > 0, total / count.clamp_min(1), torch.nan).float()

    def __call__(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch's mean score (the accumulated state is not touched)."""
        if isinstance(preds, (list, tuple)):
            preds = preds[0]
        return torch.nanmean(self.scores(preds.detach(), target.detach()))


class DiceMetric(_MeanMetric):
    """Mean Dice over samples and (foreground) classes.

    >>> import torch
    >>> m = DiceMetric()
    >>> logits = torch.zeros(1, 2, 4); logits[0, 1, :2] = 1      # predicts [1, 1, 0, 0]
    >>> m.update(logits, torch.tensor([[1, 1, 1, 0]]))
    >>> round(m.compute().item(), 4)                              # 2*2 / (2 + 3)
    0.8
    """

    def scores(self, preds, target):
        return dice_score(preds, target, self.num_classes, self.include_background)


class IoUMetric(_MeanMetric):
    """Mean intersection over union over samples and (foreground) classes."""

    def scores(self, preds, target):
        return iou_score(preds, target, self.num_classes, self.include_background)


class HausdorffDistance95(_MeanMetric):
    """Mean 95% Hausdorff distance (lower is better) over samples and foreground classes."""

    higher_is_better = False

    def __init__(
        self,
        num_classes: int | None = None,
        include_background: bool = False,
        spacing: Sequence[float] | None = None,
    ) -> None:
        self.spacing = spacing
        super().__init__(num_classes, include_background)

    def scores(self, preds, target):
        return hausdorff_distance_95(
            preds, target, self.num_classes, self.include_background, self.spacing
        )
