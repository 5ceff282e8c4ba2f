"""Helpers shared by the losses: fp32 regions, one-hot targets, argument checks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


@contextlib.contextmanager
def fp32(input: torch.Tensor) -> Iterator[None]:
    """Autocast off for ``input``'s device: the loss runs in fp32 even under fp16/bf16."""
    device_type = input.device.type if isinstance(input, torch.Tensor) else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def one_hot_target(name: str, target: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """Class indices ``(N, 1, *spatial)`` (or ``(N, *spatial)``) -> one-hot like ``input``."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: target must be a tensor, got {type(target).__name__}")
    channels = input.shape[1]
    expected = (input.shape[0], 1, *input.shape[2:])
    if target.dim() == input.dim() - 1:
        target = target.unsqueeze(1)
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{name}: class-index target shape {tuple(target.shape)} does not fit input "
            f"{tuple(input.shape)}; expected {expected}"
        )
    if target.dtype == torch.bool:
        target = target.long()
    if target.is_floating_point():
        target = target.round().long()
    # Checking the range reads the tensor on the host: free on CPU, a sync on accelerators,
    # where an out-of-range index fails inside one_hot anyway.
    if target.device.type == "cpu" and target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= channels:
            raise ValueError(
                f"{name}: target holds class indices in [{lo}, {hi}], outside [0, {channels}) "
                f"for an input with {channels} channels"
            )
    return F.one_hot(target[:, 0].long(), channels).movedim(-1, 1).to(input.dtype)
