"""Perplexity over a whole epoch: exp of the token-weighted mean cross-entropy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from deepseek.metrics.base import Metric, MetricUnavailable, as_predictions, as_target

__all__ = ["Perplexity"]


class Perplexity(Metric):
    """``exp(sum of token NLL / number of tokens)`` from logits ``[..., V]`` and token
    ids ``[...]`` (``"perplexity"``). Tokens equal to ``ignore_index`` are skipped.
    Averaging per-batch perplexities instead over-weights short batches."""

    name = "perplexity"
    higher_is_better = False
    _sum_states = ("nll", "tokens")

    def __init__(self, ignore_index: int = -100) -> None:
        self.ignore_index = ignore_index
        super().__init__()

    def reset(self) -> None:
        self.nll = torch.zeros((), dtype=torch.float64)
        self.tokens = torch.zeros((), dtype=torch.float64)

    def update(self, preds: Any, target: Any) -> None:
        logits = as_predictions(preds, self.name)
        target = as_target(target, self.name)
        if not logits.is_floating_point() or logits.shape[:-1] != target.shape:
            raise MetricUnavailable(
                f"{self.name}: needs logits [..., vocab] and token ids [...], got "
                f"{tuple(logits.shape)} and {tuple(target.shape)}"
            )
        flat = logits.reshape(-1, logits.shape[-1]).float()
        ids = target.reshape(-1).long()
        self.nll += (
            F.cross_entropy(flat, ids, ignore_index=self.ignore_index, reduction="sum")
            .double()
            .cpu()
        )
        self.tokens += (ids != self.ignore_index).sum().cpu()

    def _compute(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        if states["tokens"] == 0:
            raise MetricUnavailable(f"{self.name}: no tokens were seen")
        return torch.exp(states["nll"] / states["tokens"])
