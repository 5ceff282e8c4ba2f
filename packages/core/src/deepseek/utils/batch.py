"""Small facts about batches (tensors, tuples, dicts) shared by the loop and callbacks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: the leading size of its first tensor (1 when there is none)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else 1
    if isinstance(batch, Mapping) and batch:
        return batch_size_of(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)) and batch:
        return batch_size_of(batch[0])
    return 1
