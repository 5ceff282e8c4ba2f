"""Composition: run transforms in order on ``(image, label)`` pairs or on dict samples."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from deepseek.vision.transforms.base import check_pair, new_generator

__all__ = ["Compose"]


class Compose:
    """Apply ``transforms`` in order, all drawing from one generator per call.

    Call it as ``image, label = t(image, label)`` or on a dict sample
    (``t({"image": ..., "label": ...})`` returns a new dict with the other keys kept), as
    ``H5Dataset(transform=...)`` and ``DataLoader`` pipelines pass them. ``check_finite``
    rejects NaN/inf intensities with one clear error before anything runs.

    >>> import torch
    >>> from deepseek.vision.transforms import RandomFlip, RandomGaussianNoise
    >>> t = Compose([RandomFlip(prob=0.5), RandomGaussianNoise(prob=1.0, std=0.1)])
    >>> sample = {"image": torch.zeros(1, 8, 8, 8), "label": torch.zeros(1, 8, 8, 8), "id": 3}
    >>> out = t(sample, generator=torch.Generator().manual_seed(0))
    >>> sorted(out), out["image"].shape
    (['id', 'image', 'label'], torch.Size([1, 8, 8, 8]))
    """

    def __init__(
        self,
        transforms: Sequence[Callable[..., Any]],
        image_key: str = "image",
        label_key: str | None = "label",
        check_finite: bool = True,
    ) -> None:
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")
        self.image_key = image_key
        self.label_key = label_key
        self.check_finite = check_finite

    def __call__(
        self,
        image: Any,
        label: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Any:
        if isinstance(image, Mapping):
            sample = dict(image)
            if self.image_key not in sample:
                raise KeyError(f"Compose: sample has no {self.image_key!r}; keys: {sorted(sample)}")
            lab = sample.get(self.label_key) if self.label_key else None
            img, lab = self._run(sample[self.image_key], lab, generator)
            sample[self.image_key] = img
            if lab is not None:
                sample[self.label_key] = lab
            return sample
        if isinstance(image, tuple) and label is None and len(image) == 2:
            return self._run(*image, generator)
        img, lab = self._run(image, label, generator)
        return img if label is None else (img, lab)

    def _run(self, image, label, generator):
        check_pair("Compose", image, label)
        if (
            self.check_finite
            and image.is_floating_point()
            and not bool(torch.isfinite(image).all())
        ):
            bad = int((~torch.isfinite(image)).sum())
            raise ValueError(
                f"Compose: image of shape {tuple(image.shape)} has {bad} non-finite values "
                "(NaN or inf); clean the source volume"
            )
        g = new_generator(generator)
        for t in self.transforms:
            out = t(image, label, generator=g)
            image, label = out if label is not None else (out, None)
        return image, label

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose([\n  {inner}\n])"
