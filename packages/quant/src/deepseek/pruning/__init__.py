"""``deepseek.pruning``: channel pruning (deepseek-quant).

:func:`prune` removes channels physically (a smaller, faster model); the ``mask`` mode,
:class:`L1ChannelPruning`, zeroes them in place with ``torch.nn.utils.prune``.

>>> import torch
>>> from deepseek.pruning import L1ChannelPruning
>>> conv = torch.nn.Conv2d(3, 8, 3)
>>> _ = L1ChannelPruning(amount=0.25).apply(conv)
>>> int((conv.weight.flatten(1).abs().sum(1) == 0).sum())
2
"""

from __future__ import annotations

from deepseek.pruning.iterative import IterativePruning
from deepseek.pruning.physical import ChannelPruning, PruneReport, prune
from deepseek.pruning.resize import load_into, shrink_to_state
from deepseek.pruning.structured import (
    PRUNABLE,
    L1ChannelPruning,
    make_permanent,
    prunable_layers,
)

__all__ = [
    "PRUNABLE",
    "ChannelPruning",
    "IterativePruning",
    "L1ChannelPruning",
    "load_into",
    "PruneReport",
    "make_permanent",
    "prunable_layers",
    "prune",
    "shrink_to_state",
]
