"""Synthetic CT phantoms: a body with organs as randomly placed, rotated ellipsoids, soft
tissue texture, a bone distractor, noise, and a label map. For examples, tests and scale
tests: nothing to download, every phantom reproducible from its seed."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["ORGANS", "make_ct_phantom", "write_phantom_h5"]

# (name, label, mean HU): the classes a phantom's label map holds (0 is background).
ORGANS = (("liver", 1, 90.0), ("kidney", 2, 160.0))


def _rotation(generator: torch.Generator, max_angle: float) -> torch.Tensor:
    angles = (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1) * max_angle
    m = torch.eye(3, dtype=torch.float64)
    for a, (i, j) in zip(angles.tolist(), ((1, 2), (0, 2), (0, 1))):
        r = torch.eye(3, dtype=torch.float64)
        r[i, i], r[i, j], r[j, i], r[j, j] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
        m = r @ m
    return m.float()


def _ellipsoid(coords: torch.Tensor, centre, radii, rotation) -> torch.Tensor:
    """Mask of an ellipsoid; ``coords`` is ``(D, H, W, 3)`` in [-1, 1] units."""
    local = (coords - torch.tensor(centre, dtype=coords.dtype)) @ rotation.T
    return ((local / torch.tensor(radii, dtype=coords.dtype)) ** 2).sum(-1) <= 1.0


def _texture(shape: Sequence[int], generator: torch.Generator, scale: int = 4) -> torch.Tensor:
    coarse = torch.randn((1, 1, *[max(2, s // scale) for s in shape]), generator=generator)
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0]


def make_ct_phantom(
    shape: Sequence[int] = (64, 64, 64),
    seed: int | None = None,
    noise_std: float = 20.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One phantom: ``image (1, D, H, W)`` float32 in Hounsfield units and ``label
    (1, D, H, W)`` uint8 with 0 background, 1 liver (one large ellipsoid), 2 kidneys (two
    small ellipsoids); air outside the body (-1000 HU), a bone cylinder (~700 HU) that is
    not labelled, smooth tissue texture and Gaussian noise.

    >>> image, label = make_ct_phantom((32, 32, 32), seed=0)
    >>> image.shape, sorted(label.unique().tolist())
    (torch.Size([1, 32, 32, 32]), [0, 1, 2])
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes >= 8, got {shape}")
    g = (
        generator
        if generator is not None
        else torch.Generator().manual_seed(
            int(seed) if seed is not None else int(torch.randint(0, 2**62, ()))
        )
    )
    rand = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=g))  # noqa: E731
    axes = [torch.linspace(-1, 1, s) for s in shape]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)

    image = torch.full(shape, -1000.0)
    label = torch.zeros(shape, dtype=torch.uint8)
    body = _ellipsoid(coords, (0, 0, 0), (0.95, rand(0.75, 0.9), rand(0.85, 0.95)), torch.eye(3))
    image[body] = 20.0
    # Spine-like bone: a cylinder along the first axis, behind the organs; not labelled.
    bone = ((coords[..., 1] - 0.5) ** 2 + (coords[..., 2] - rand(-0.1, 0.1)) ** 2 <= 0.12**2) & body
    image[bone] = 700.0

    liver_c = (rand(-0.3, 0.3), rand(-0.35, 0.0), rand(-0.45, -0.2))
    liver = (
        _ellipsoid(
            coords,
            liver_c,
            (rand(0.35, 0.5), rand(0.25, 0.35), rand(0.25, 0.35)),
            _rotation(g, 0.5),
        )
        & body
    )
    image[liver], label[liver] = ORGANS[0][2], ORGANS[0][1]
    kz = rand(-0.3, 0.3)
    for side in (-1, 1):
        centre = (kz + rand(-0.1, 0.1), rand(0.1, 0.25), side * rand(0.35, 0.5))
        if side < 0:  # keep the left kidney clear of the liver
            centre = (centre[0], centre[1], centre[2] if centre[2] < -0.45 else -0.5)
        kidney = (
            _ellipsoid(
                coords,
                centre,
                (rand(0.2, 0.28), rand(0.13, 0.17), rand(0.12, 0.16)),
                _rotation(g, 0.4),
            )
            & body
            & ~liver
        )
        image[kidney], label[kidney] = ORGANS[1][2], ORGANS[1][1]

    image = image + body * (15.0 * _texture(shape, g)) + noise_std * torch.randn(shape, generator=g)
    return image[None].float(), label[None]


def write_phantom_h5(
    path: str | os.PathLike,
    n: int,
    shape: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``n`` phantoms to one HDF5 file: ``image (n, 1, D, H, W)`` float32 (HU) and
    ``label (n, 1, D, H, W)`` uint8, chunked for patch reads (``H5Dataset`` layout)."""
    from deepseek.utils.data import write_h5

    images, labels = zip(*(make_ct_phantom(shape, seed=seed * 100_003 + i) for i in range(n)))
    return write_h5(
        path,
        {"image": torch.stack(images).numpy(), "label": torch.stack(labels).numpy()},
        overwrite=overwrite,
    )
