"""Label-balanced random patches from large volumes stored in HDF5.

Reads go through ``ds.utils.data.H5Dataset`` in patch mode, which reads only a patch's
hyperslab from disk. This dataset decides *which* patch: with probability
``pos / (pos + neg)`` one that contains foreground, otherwise one that does not, uniformly
among the patch grid's candidates (found once, at construction, from the label volumes).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["PatchDataset"]


def _starts(size: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


class PatchDataset(Dataset):
    """``samples_per_volume`` random patches per volume, balanced between foreground and
    background, from HDF5 files in the ``H5Dataset`` layout (axis 0 = volumes; ``image``
    ``(N, C, D, H, W)`` or ``(N, D, H, W)``, ``label`` likewise).

    Items are ``(image, label)``: channel-first float32 image and int64 label patches,
    passed through ``transform(image, label)`` if given. Item ``i`` draws its patch from a
    generator seeded by ``(seed, epoch, i)`` when ``seed`` is set (reproducible, call
    :meth:`set_epoch` for new patches each epoch), else from torch's global RNG (different
    in every ``DataLoader`` worker).

    Args:
        paths: HDF5 file(s).
        patch_size: spatial patch size (2 or 3 ints).
        samples_per_volume: items per volume and epoch.
        pos, neg: relative odds of a foreground / background patch.
        stride: step of the candidate patch grid (default a quarter of the patch).
        keys: image and label dataset names.
        transform: ``(image, label) -> (image, label)``, e.g. a ``transforms.Compose``.
        num_classes: if given, labels outside ``[0, num_classes)`` are an error at construction.
        seed: see above.

    >>> import tempfile
    >>> from deepseek.vision.data import PatchDataset, write_phantom_h5
    >>> path = write_phantom_h5(f"{tempfile.mkdtemp()}/ct.h5", n=2, shape=(32, 32, 32))
    >>> data = PatchDataset(path, (16, 16, 16), samples_per_volume=4, pos=1, neg=0, seed=0)
    >>> image, label = data[0]
    >>> len(data), image.shape, bool(label.any())
    (8, torch.Size([1, 16, 16, 16]), True)
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        patch_size: Sequence[int],
        samples_per_volume: int = 4,
        pos: float = 1.0,
        neg: float = 1.0,
        stride: int | Sequence[int] | None = None,
        keys: Sequence[str] = ("image", "label"),
        transform: Callable[..., Any] | None = None,
        num_classes: int | None = None,
        seed: int | None = None,
    ) -> None:
        from deepseek.utils.data import H5Dataset

        if pos < 0 or neg < 0 or pos + neg <= 0:
            raise ValueError(f"pos and neg must be >= 0 and not both 0, got pos={pos}, neg={neg}")
        if isinstance(samples_per_volume, bool) or samples_per_volume < 1:
            raise ValueError(
                f"samples_per_volume must be a positive int, got {samples_per_volume!r}"
            )
        self.patch_size = tuple(int(p) for p in patch_size)
        k = len(self.patch_size)
        if k not in (2, 3):
            raise ValueError(f"patch_size must have 2 or 3 sizes, got {tuple(patch_size)}")
        if stride is None:
            stride = tuple(max(1, p // 4) for p in self.patch_size)
        self.stride = (stride,) * k if isinstance(stride, int) else tuple(stride)
        self.keys = tuple(keys)
        self.samples_per_volume = samples_per_volume
        self.pos, self.neg = float(pos), float(neg)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        # H5Dataset validates files and keys, and raises a clear error for a patch larger
        # than a volume; in patch mode it reads only each patch's hyperslab.
        self.patches = H5Dataset(
            paths, keys=self.keys, patch_size=self.patch_size, patch_stride=self.stride
        )
        volumes = H5Dataset(paths, keys=self.keys[1:], to_tensor=False)
        self._offset: list[int] = []  # first H5Dataset patch index of each volume
        self._fg: list[np.ndarray] = []  # patch numbers (within the volume) with foreground
        self._bg: list[np.ndarray] = []
        offset = 0
        for v in range(len(volumes)):
            (label,) = volumes[v]
            label = np.asarray(label)
            spatial = label.shape[-k:]
            if num_classes is not None and label.size:
                lo, hi = int(label.min()), int(label.max())
                if lo < 0 or hi >= num_classes:
                    path, sample, _ = volumes.locate(v)
                    raise ValueError(
                        f"{path} volume {sample}: label values in [{lo}, {hi}] are outside "
                        f"[0, {num_classes}) for num_classes={num_classes}"
                    )
            fg = (label > 0).reshape(-1, *spatial).any(0)
            starts = [_starts(s, p, st) for s, p, st in zip(spatial, self.patch_size, self.stride)]
            counts = _box_counts(fg, starts, self.patch_size)
            self._fg.append(np.flatnonzero(counts > 0))
            self._bg.append(np.flatnonzero(counts == 0))
            self._offset.append(offset)
            offset += counts.size
        volumes.close()
        if offset != len(self.patches):
            raise RuntimeError(
                f"PatchDataset: {offset} candidate patches but H5Dataset has {len(self.patches)}; "
                "the two patch grids disagree"
            )

    def __len__(self) -> int:
        return len(self._offset) * self.samples_per_volume

    def set_epoch(self, epoch: int) -> None:
        """New patches each epoch (with ``seed``): item ``i`` of epoch ``e`` uses (seed, e, i)."""
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator:
        if self.seed is None:
            return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        mixed = hash((int(self.seed), self.epoch, int(index))) & ((1 << 62) - 1)
        return torch.Generator().manual_seed(mixed)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for PatchDataset of length {len(self)}")
        index %= len(self)
        v = index // self.samples_per_volume
        g = self._generator(index)
        want_fg = float(torch.rand((), generator=g)) < self.pos / (self.pos + self.neg)
        pool = self._fg[v] if want_fg else self._bg[v]
        if pool.size == 0:
            pool = self._bg[v] if want_fg else self._fg[v]
        choice = int(pool[int(torch.randint(0, pool.size, (), generator=g))])
        image, label = self.patches[self._offset[v] + choice]
        k = len(self.patch_size)
        image = image if image.dim() > k else image.unsqueeze(0)
        label = label if label.dim() > k else label.unsqueeze(0)
        image = image.float()
        if not bool(torch.isfinite(image).all()):
            path, sample, start = self.patches.locate(self._offset[v] + choice)
            raise ValueError(
                f"{path} volume {sample}: non-finite intensities (NaN/inf) in the patch at {start}"
            )
        label = label.long()
        if self.transform is not None:
            image, label = self.transform(image, label, generator=g)
        return image, label


def _box_counts(
    mask: np.ndarray, starts: Sequence[Sequence[int]], size: Sequence[int]
) -> np.ndarray:
    """Foreground voxels in every patch of the grid (row-major, as ``H5Dataset`` orders
    patches), with a summed-area table: no loop over voxels or patches."""
    k = mask.ndim
    table = np.pad(mask.astype(np.int64), [(1, 0)] * k)
    for axis in range(k):
        table = table.cumsum(axis)
    lo = [np.asarray(s) for s in starts]
    hi = [np.asarray(s) + p for s, p in zip(starts, size)]
    total = np.zeros([len(s) for s in starts], dtype=np.int64)
    for corner in itertools.product((0, 1), repeat=k):
        index = np.ix_(*[hi[a] if c else lo[a] for a, c in enumerate(corner)])
        sign = (-1) ** (k - sum(corner))
        total += sign * table[index]
    return total.reshape(-1)
