"""Shared machinery: argument checks, per-call generators, the image/label calling convention."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["Transform", "RandomTransform", "check_pair", "device_generator", "new_generator"]


def new_generator(generator: torch.Generator | None) -> torch.Generator:
    """The generator a call draws from: the one given, else a fresh one seeded from torch's
    global RNG (which ``DataLoader`` seeds differently in every worker: worker-safe)."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return torch.Generator().manual_seed(seed)


def device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from ``generator``: large random fields are drawn
    where the tensor lives, reproducibly for a given seed and device type."""
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64, generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def uniform(generator: torch.Generator, low: float, high: float, n: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def as_range(
    name: str, value: float | Sequence[float], symmetric: bool = False
) -> tuple[float, float]:
    """``(low, high)`` from a number (``(-v, v)`` if symmetric, else ``(v, v)``) or a pair."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (-float(value), float(value)) if symmetric else (float(value), float(value))
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ValueError(
            f"{name} must be a number or a (low, high) pair with low <= high, got {value!r}"
        )
    return pair  # type: ignore[return-value]


def check_prob(prob: float) -> float:
    if isinstance(prob, bool) or not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob!r}")
    return float(prob)


def check_pair(name: str, image: torch.Tensor, label: torch.Tensor | None) -> int:
    """Checks a channel-first image ``(C, H, W)`` / ``(C, D, H, W)`` and its label; returns
    the number of spatial dims."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name}: image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() not in (3, 4):
        raise ValueError(
            f"{name}: image must be channel-first (C, H, W) or (C, D, H, W), got shape "
            f"{tuple(image.shape)}"
        )
    if label is not None:
        if not isinstance(label, torch.Tensor):
            raise TypeError(f"{name}: label must be a torch.Tensor, got {type(label).__name__}")
        if label.shape[1:] != image.shape[1:] or label.dim() != image.dim():
            raise ValueError(
                f"{name}: image and label must have the same spatial shape (channel-first), got "
                f"image {tuple(image.shape)} and label {tuple(label.shape)}"
            )
        if label.device != image.device:
            raise ValueError(
                f"{name}: image is on {image.device} but label on {label.device}; move both"
            )
    return image.dim() - 1


class Transform:
    """Deterministic transform: ``image, label = t(image, label)`` or ``image = t(image)``."""

    def __call__(
        self,
        image: torch.Tensor,
        label: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Any:
        check_pair(type(self).__name__, image, label)
        image, label = self.apply(image, label, generator)
        return image if label is None else (image, label)

    def apply(
        self, image: torch.Tensor, label: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class RandomTransform(Transform):
    """Applies itself with probability ``prob``; draws every random number from one
    ``torch.Generator`` per call, so a seeded generator reproduces the output exactly."""

    def __init__(self, prob: float) -> None:
        self.prob = check_prob(prob)

    def __call__(
        self,
        image: torch.Tensor,
        label: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Any:
        check_pair(type(self).__name__, image, label)
        g = new_generator(generator)
        if self.prob < 1.0 and float(torch.rand((), generator=g)) >= self.prob:
            return image if label is None else (image, label)
        image, label = self.apply(image, label, g)
        return image if label is None else (image, label)
