"""``deepseek.pruning``: structured pruning on ``torch.nn.utils.prune`` (deepseek-quant).

>>> import torch
>>> from deepseek.pruning import L1ChannelPruning
>>> conv = torch.nn.Conv2d(3, 8, 3)
>>> _ = L1ChannelPruning(amount=0.25).apply(conv)
>>> int((conv.weight.flatten(1).abs().sum(1) == 0).sum())
2
"""

from __future__ import annotations

from deepseek.pruning.structured import (
    PRUNABLE,
    L1ChannelPruning,
    make_permanent,
    prunable_layers,
)

__all__ = ["PRUNABLE", "L1ChannelPruning", "make_permanent", "prunable_layers"]
