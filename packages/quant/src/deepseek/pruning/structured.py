"""Structured L1 pruning of output channels (algorithm ``l1_channel_pruning``).

Built on ``torch.nn.utils.prune``: ``ln_structured`` (n=1, dim=0) masks the output
channels of each Conv/Linear weight with the smallest L1 norms, and the same channels
of the bias are masked too, so a pruned channel's output is exactly zero. The masks
live on the module (``weight_orig`` + ``weight_mask``) until :func:`make_permanent`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import nn
from torch.nn.utils import prune

# Layers whose weight has output channels on dim 0 (transposed convs do not).
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _check_amount(amount: float) -> float:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"amount must be a fraction like 0.3, got {type(amount).__name__}")
    if not (math.isfinite(amount) and 0.0 <= amount < 1.0):
        raise ValueError(
            f"amount is the fraction of output channels to prune, in [0, 1); got {amount!r}"
        )
    return float(amount)  # an int would mean a channel count to torch


def prunable_layers(model: nn.Module, exclude: Iterable[str] = ()) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Conv/Linear layer of ``model`` not named in ``exclude``."""
    excluded = set(exclude)
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE) and name not in excluded
    ]


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into its parameter (``prune.remove``) and drop the hooks,
    leaving plain ``weight``/``bias`` parameters with the pruned channels at zero."""
    for module in model.modules():
        for name in ("weight", "bias"):
            if hasattr(module, f"{name}_orig") and hasattr(module, f"{name}_mask"):
                prune.remove(module, name)
    return model


class L1ChannelPruning:
    """Zero the fraction ``amount`` of output channels with the lowest L1 norm in every
    Conv1d/2d/3d and Linear layer (each layer pruned on its own).

    ``apply(model)`` prunes in place and returns ``model``; layers named in ``exclude``
    (e.g. the classifier ``"head"``) are left alone. Applying again prunes ``amount`` of
    the channels that remain (torch's iterative pruning). Call ``make_permanent`` before
    saving or exporting to drop the masks.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 10), torch.nn.ReLU(),
    ...                             torch.nn.Linear(10, 2))
    >>> pruning = L1ChannelPruning(amount=0.3, exclude=["2"])
    >>> model = pruning.make_permanent(pruning.apply(model))
    >>> int((model[0].weight.abs().sum(dim=1) == 0).sum())
    3
    """

    def __init__(
        self, amount: float = 0.3, *, exclude: Iterable[str] = (), prune_bias: bool = True
    ) -> None:
        self.amount = _check_amount(amount)
        if isinstance(exclude, str):
            exclude = [exclude]
        self.exclude = tuple(exclude)
        self.prune_bias = prune_bias

    def apply(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        names = {name for name, _ in model.named_modules()}
        unknown = sorted(set(self.exclude) - names)
        if unknown:
            raise ValueError(f"exclude names no submodule of the model: {unknown}")
        layers = prunable_layers(model, self.exclude)
        if not layers:
            raise ValueError(
                f"{type(model).__name__} has no Conv1d/Conv2d/Conv3d/Linear layer to prune"
            )
        for _, module in layers:
            prune.ln_structured(module, "weight", amount=self.amount, n=1, dim=0)
            if self.prune_bias and module.bias is not None:
                kept = module.weight_mask.flatten(1).any(dim=1)
                prune.custom_from_mask(module, "bias", mask=kept.to(module.bias.dtype))
        return model

    def make_permanent(self, model: nn.Module) -> nn.Module:
        return make_permanent(model)

    def __repr__(self) -> str:
        return f"L1ChannelPruning(amount={self.amount}, exclude={self.exclude})"
