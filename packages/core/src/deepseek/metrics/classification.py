"""Accuracy, F1 and AUROC over a whole epoch.

Predictions are logits or probabilities ``[N, C]`` (any leading dims, classes last) with
class-index targets ``[N]``, or binary scores shaped like the targets (probabilities in
0..1, or logits, which go through a sigmoid), or predicted class indices shaped like
the targets. Targets equal to ``ignore_index`` (-100, as in ``cross_entropy``) are left
out.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.distributed as dist

from deepseek.metrics.base import (
    Metric,
    MetricUnavailable,
    all_gather_cat,
    as_predictions,
    as_target,
)

__all__ = ["AUROC", "F1", "Accuracy", "F1Macro", "F1Micro"]


def class_labels(
    output: Any, target: Any, metric: str, *, threshold: float = 0.5, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor, int | None, bool]:
    """``(predicted labels, target labels, number of classes or None, binary?)``, flat."""
    preds = as_predictions(output, metric)
    target = as_target(target, metric)
    if preds.is_floating_point() and preds.dim() == target.dim() + 1:
        if preds.shape[:-1] != target.shape:
            raise _shape_error(metric, preds, target)
        if preds.shape[-1] == 1:  # one logit per sample: binary
            return class_labels(preds[..., 0], target, metric, threshold=threshold)
        num_classes, binary = preds.shape[-1], False
        labels = preds.argmax(dim=-1)
    elif preds.shape == target.shape:
        if preds.is_floating_point():
            labels = (_probabilities(preds) >= threshold).long()
            num_classes, binary = 2, True
        else:
            labels, num_classes, binary = preds.long(), None, False
    else:
        raise _shape_error(metric, preds, target)
    labels, target = labels.reshape(-1), target.reshape(-1).long()
    keep = target != ignore_index
    return labels[keep], target[keep], num_classes, binary


def _probabilities(scores: torch.Tensor) -> torch.Tensor:
    if scores.numel() and (scores.min() < 0 or scores.max() > 1):
        return scores.float().sigmoid()
    return scores.float()


def _shape_error(metric: str, preds: torch.Tensor, target: torch.Tensor) -> MetricUnavailable:
    return MetricUnavailable(
        f"{metric}: predictions of shape {tuple(preds.shape)} do not fit targets of shape "
        f"{tuple(target.shape)}; expected logits [N, C] with class-index targets [N], or "
        "scores/labels shaped like the targets"
    )


class Accuracy(Metric):
    """Fraction of correct predictions over everything seen (``"accuracy"``)."""

    name = "accuracy"
    _sum_states = ("correct", "total")

    def __init__(self, threshold: float = 0.5, ignore_index: int = -100) -> None:
        self.threshold = threshold
        self.ignore_index = ignore_index
        super().__init__()

    def reset(self) -> None:
        self.correct = torch.zeros((), dtype=torch.float64)
        self.total = torch.zeros((), dtype=torch.float64)

    def update(self, preds: Any, target: Any) -> None:
        labels, target, _, _ = class_labels(
            preds, target, self.name, threshold=self.threshold, ignore_index=self.ignore_index
        )
        self.correct += (labels == target).sum().cpu()
        self.total += target.numel()

    def _compute(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        if states["total"] == 0:
            raise MetricUnavailable(f"{self.name}: no samples were seen")
        return states["correct"] / states["total"]


class F1(Metric):
    """F1 score over everything seen, from per-class true/false positive counts.

    ``average``: ``"macro"`` (mean over the classes present in targets or predictions,
    as scikit-learn), ``"micro"`` (from the summed counts; equals accuracy for
    single-label multi-class), ``"binary"`` (the positive class 1), or ``None`` (the
    default): binary for binary scores, macro otherwise. Names: ``"f1"``,
    ``"f1_macro"``, ``"f1_micro"``.
    """

    name = "f1"
    _sum_states = ("tp", "fp", "fn")

    def __init__(
        self,
        average: Literal["macro", "micro", "binary"] | None = None,
        num_classes: int | None = None,
        threshold: float = 0.5,
        ignore_index: int = -100,
    ) -> None:
        if average not in (None, "macro", "micro", "binary"):
            raise ValueError(f"average must be 'macro', 'micro', 'binary' or None, got {average!r}")
        self.average = average
        self.num_classes = num_classes
        self.threshold = threshold
        self.ignore_index = ignore_index
        super().__init__()

    def reset(self) -> None:
        size = self.num_classes or 0
        self.tp = torch.zeros(size, dtype=torch.float64)
        self.fp = torch.zeros(size, dtype=torch.float64)
        self.fn = torch.zeros(size, dtype=torch.float64)
        self.binary: bool | None = None

    def update(self, preds: Any, target: Any) -> None:
        labels, target, num_classes, binary = class_labels(
            preds, target, self.name, threshold=self.threshold, ignore_index=self.ignore_index
        )
        self.binary = binary if self.binary is None else self.binary
        size = max(
            self.tp.numel(),
            num_classes or 0,
            int(labels.max()) + 1 if labels.numel() else 0,
            int(target.max()) + 1 if target.numel() else 0,
        )
        self._grow(size)
        labels, target = labels.cpu(), target.cpu()
        hit = labels == target
        self.tp += torch.bincount(target[hit], minlength=size).double()
        self.fp += torch.bincount(labels[~hit], minlength=size).double()
        self.fn += torch.bincount(target[~hit], minlength=size).double()

    def _grow(self, size: int) -> None:
        for name in self._sum_states:
            tensor = getattr(self, name)
            if tensor.numel() < size:
                setattr(self, name, torch.cat([tensor, tensor.new_zeros(size - tensor.numel())]))

    def _synced_states(self) -> dict[str, torch.Tensor]:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            size = torch.tensor([self.tp.numel()])
            dist.all_reduce(size, op=dist.ReduceOp.MAX)  # ranks may have seen fewer classes
            self._grow(int(size.item()))
        return super()._synced_states()

    def _compute(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        tp, fp, fn = states["tp"], states["fp"], states["fn"]
        if (tp + fn).sum() == 0:
            raise MetricUnavailable(f"{self.name}: no samples were seen")
        average = self.average or ("binary" if self.binary else "macro")
        if average == "binary":
            if tp.numel() > 2:
                raise MetricUnavailable(
                    f"{self.name}: average='binary' needs two classes, the data has "
                    f"{tp.numel()}; use f1_macro or f1_micro"
                )
            tp, fp, fn = (t[1] if t.numel() > 1 else t.new_zeros(()) for t in (tp, fp, fn))
            return _f1(tp, fp, fn)
        if average == "micro":
            return _f1(tp.sum(), fp.sum(), fn.sum())
        present = (tp + fp + fn) > 0
        return _f1(tp, fp, fn)[present].mean()


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    denominator = 2 * tp + fp + fn
    return torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1e-300), 0.0)


class F1Macro(F1):
    """F1 averaged over classes (``"f1_macro"``)."""

    name = "f1_macro"

    def __init__(
        self, num_classes: int | None = None, threshold: float = 0.5, ignore_index: int = -100
    ) -> None:
        super().__init__("macro", num_classes, threshold, ignore_index)


class F1Micro(F1):
    """F1 from counts summed over classes (``"f1_micro"``)."""

    name = "f1_micro"

    def __init__(
        self, num_classes: int | None = None, threshold: float = 0.5, ignore_index: int = -100
    ) -> None:
        super().__init__("micro", num_classes, threshold, ignore_index)


class AUROC(Metric):
    """Area under the ROC curve over everything seen (``"auroc"``): binary scores shaped
    like the targets, or ``[N, C]`` scores (one-vs-rest, macro over the classes that
    have both positives and negatives; logits are softmaxed first). Keeps every score
    (AUROC has no small sufficient statistic); ranks' scores are gathered."""

    name = "auroc"

    def __init__(self, ignore_index: int = -100) -> None:
        self.ignore_index = ignore_index
        super().__init__()

    def reset(self) -> None:
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.logits = False

    def update(self, preds: Any, target: Any) -> None:
        scores = as_predictions(preds, self.name).float()
        target = as_target(target, self.name)
        if scores.dim() == target.dim() + 1 and scores.shape[-1] == 1:
            scores = scores[..., 0]
        if scores.shape == target.shape:
            scores = scores.reshape(-1, 1)
        elif scores.dim() == target.dim() + 1 and scores.shape[:-1] == target.shape:
            scores = scores.reshape(-1, scores.shape[-1])
            sums = scores.sum(-1)
            if scores.min() < 0 or not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
                self.logits = True  # softmaxed once, over the whole set, in compute()
        else:
            raise MetricUnavailable(
                f"{self.name}: scores of shape {tuple(scores.shape)} do not fit targets of "
                f"shape {tuple(target.shape)}"
            )
        target = target.reshape(-1).long()
        keep = target != self.ignore_index
        if self.scores and self.scores[0].shape[1] != scores.shape[1]:
            raise MetricUnavailable(f"{self.name}: the number of score columns changed")
        self.scores.append(scores[keep].cpu())
        self.targets.append(target[keep].cpu())

    def compute(self) -> torch.Tensor:
        if not self.scores:
            raise MetricUnavailable(f"{self.name}: no samples were seen")
        scores = all_gather_cat(torch.cat(self.scores))
        targets = all_gather_cat(torch.cat(self.targets))
        if self.logits and scores.shape[1] > 1:
            scores = scores.softmax(-1)
        if scores.shape[1] == 1:
            return _binary_auroc(scores[:, 0], targets == 1, self.name)
        values = []
        for c in range(scores.shape[1]):
            positive = targets == c
            if 0 < int(positive.sum()) < positive.numel():
                values.append(_binary_auroc(scores[:, c], positive, self.name))
        if not values:
            raise MetricUnavailable(f"{self.name}: needs samples of at least two classes")
        return torch.stack(values).mean()

    def _compute(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError  # compute() is overridden

    def __call__(self, preds: Any, target: Any) -> torch.Tensor:
        fresh = AUROC(self.ignore_index)
        fresh.update(preds, target)
        return fresh._local()

    def _local(self) -> torch.Tensor:
        scores, targets = torch.cat(self.scores), torch.cat(self.targets)
        if scores.shape[1] == 1:
            return _binary_auroc(scores[:, 0], targets == 1, self.name)
        return torch.tensor(math.nan)


def _binary_auroc(scores: torch.Tensor, positive: torch.Tensor, metric: str) -> torch.Tensor:
    """Mann-Whitney U / (n_pos * n_neg), ties counted half (average ranks); one sort."""
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise MetricUnavailable(
            f"{metric}: needs both positive and negative targets, got only "
            f"{'negatives' if n_pos == 0 else 'positives'} ({positive.numel()} samples)"
        )
    ordered, order = torch.sort(scores)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group = starts.cumsum(0) - 1  # tie group of each sorted score
    counts = torch.bincount(group).double()
    average_rank = counts.cumsum(0) - (counts - 1) / 2  # 1-based ranks, ties averaged
    rank_sum = average_rank[group][positive[order]].sum()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
