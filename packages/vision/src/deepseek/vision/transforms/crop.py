"""Crops: random, centre, and foreground/background-balanced patch sampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deepseek.vision.transforms.base import RandomTransform, Transform

__all__ = ["CenterCrop", "RandomCrop", "RandomCropByPosNegLabel", "crop_window", "check_roi"]


def check_roi(name: str, roi_size: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != len(shape) or min(roi) < 1:
        raise ValueError(
            f"{name}: roi_size {tuple(roi_size)} must have {len(shape)} positive sizes"
        )
    if any(r > s for r, s in zip(roi, shape)):
        raise ValueError(
            f"{name}: patch size {roi} is larger than the volume {tuple(shape)}; pad the volume "
            "or pick a smaller patch"
        )
    return roi


def crop_window(start: Sequence[int], roi: Sequence[int]) -> tuple[slice, ...]:
    return (slice(None), *(slice(int(s), int(s) + int(r)) for s, r in zip(start, roi)))


class CenterCrop(Transform):
    """Crop the central ``roi_size`` window."""

    def __init__(self, roi_size: Sequence[int]) -> None:
        self.roi_size = tuple(roi_size)

    def apply(self, image, label, generator):
        shape = image.shape[1:]
        roi = check_roi("CenterCrop", self.roi_size, shape)
        window = crop_window([(s - r) // 2 for s, r in zip(shape, roi)], roi)
        return image[window], None if label is None else label[window]


class RandomCrop(RandomTransform):
    """Crop a ``roi_size`` window at a uniformly random position.

    >>> import torch
    >>> RandomCrop((8, 8, 8))(torch.randn(1, 16, 20, 24)).shape
    torch.Size([1, 8, 8, 8])
    """

    def __init__(self, roi_size: Sequence[int]) -> None:
        super().__init__(1.0)
        self.roi_size = tuple(roi_size)

    def apply(self, image, label, generator):
        shape = image.shape[1:]
        roi = check_roi("RandomCrop", self.roi_size, shape)
        start = [
            int(torch.randint(0, s - r + 1, (), generator=generator)) for s, r in zip(shape, roi)
        ]
        window = crop_window(start, roi)
        return image[window], None if label is None else label[window]


def balanced_start(
    label: torch.Tensor,
    roi: Sequence[int],
    pos: float,
    neg: float,
    generator: torch.Generator,
) -> tuple[int, ...]:
    """A patch start whose centre is a foreground voxel (``label > 0``) with probability
    ``pos / (pos + neg)``, else a background voxel; falls back to the other kind when a
    volume has none of one. The chosen centre is shifted so the patch stays inside."""
    shape = label.shape[1:]
    want_fg = float(torch.rand((), generator=generator)) < pos / (pos + neg)
    mask = (label > 0).any(0)
    if not want_fg:
        mask = ~mask
    flat = mask.flatten()
    count = int(flat.sum())
    if count == 0:
        flat = ~flat
        count = int(flat.sum())
    # The n-th True voxel, found with cumsum + searchsorted (no Python loop over voxels).
    nth = int(torch.randint(0, count, (), generator=generator))
    index = int(torch.searchsorted(flat.cumsum(0), torch.tensor(nth + 1, device=flat.device)))
    centre = []
    for s in reversed(shape):
        centre.append(index % s)
        index //= s
    centre.reverse()
    return tuple(min(max(c - r // 2, 0), s - r) for c, r, s in zip(centre, roi, shape))


class RandomCropByPosNegLabel(RandomTransform):
    """Crop a ``spatial_size`` patch centred on foreground with probability ``pos/(pos+neg)``
    (MONAI's ``RandCropByPosNegLabel``): balanced sampling for small organs in big volumes.

    >>> import torch
    >>> label = torch.zeros(1, 32, 32, 32, dtype=torch.long); label[0, 20:24, 5:9, 10:14] = 1
    >>> t = RandomCropByPosNegLabel((8, 8, 8), pos=1.0, neg=0.0)
    >>> _, patch = t(torch.randn(1, 32, 32, 32), label, generator=torch.Generator().manual_seed(0))
    >>> bool(patch.any())
    True
    """

    def __init__(self, spatial_size: Sequence[int], pos: float = 1.0, neg: float = 1.0) -> None:
        super().__init__(1.0)
        if pos < 0 or neg < 0 or pos + neg <= 0:
            raise ValueError(f"pos and neg must be >= 0 and not both 0, got pos={pos}, neg={neg}")
        self.spatial_size = tuple(spatial_size)
        self.pos, self.neg = float(pos), float(neg)

    def apply(self, image, label, generator):
        if label is None:
            raise ValueError("RandomCropByPosNegLabel needs the label: call t(image, label)")
        roi = check_roi("RandomCropByPosNegLabel", self.spatial_size, image.shape[1:])
        window = crop_window(balanced_start(label, roi, self.pos, self.neg, generator), roi)
        return image[window], label[window]
