"""Intensity transforms: CT windowing, normalisation, Gaussian noise (labels untouched)."""

from __future__ import annotations

import torch

from deepseek.vision.transforms.base import RandomTransform, Transform, device_generator

__all__ = ["CTWindow", "NormalizeIntensity", "RandomGaussianNoise", "ScaleIntensityRange"]


def _float(image: torch.Tensor) -> torch.Tensor:
    return image if image.is_floating_point() else image.float()


class ScaleIntensityRange(Transform):
    """Map ``[a_min, a_max]`` linearly to ``[b_min, b_max]``, clipping outside if ``clip``
    (MONAI's ``ScaleIntensityRange``): the usual Hounsfield-unit window for CT.

    >>> import torch
    >>> ScaleIntensityRange(-1000, 1000, 0.0, 1.0)(torch.tensor([[[-2000., 0., 500.]]])).tolist()
    [[[0.0, 0.5, 0.75]]]
    """

    def __init__(
        self, a_min: float, a_max: float, b_min: float = 0.0, b_max: float = 1.0, clip: bool = True
    ) -> None:
        if a_max == a_min:
            raise ValueError(f"a_min and a_max must differ, got {a_min}")
        self.a_min, self.a_max, self.b_min, self.b_max, self.clip = a_min, a_max, b_min, b_max, clip

    def apply(self, image, label, generator):
        out = (_float(image) - self.a_min) / (self.a_max - self.a_min)
        out = out * (self.b_max - self.b_min) + self.b_min
        if self.clip:
            out = out.clamp(min(self.b_min, self.b_max), max(self.b_min, self.b_max))
        return out, label


class CTWindow(ScaleIntensityRange):
    """A CT window by ``level`` (centre) and ``width`` in HU, mapped to [0, 1]; e.g. soft
    tissue ``CTWindow(40, 400)``, lung ``CTWindow(-600, 1500)``, bone ``CTWindow(400, 1800)``."""

    def __init__(self, level: float = 40.0, width: float = 400.0) -> None:
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        super().__init__(level - width / 2, level + width / 2, 0.0, 1.0, clip=True)


class NormalizeIntensity(Transform):
    """Zero mean, unit standard deviation per channel (``nonzero=True``: over non-zero
    voxels only, leaving zeros as they are).

    >>> import torch
    >>> out = NormalizeIntensity()(torch.tensor([[[1.0, 3.0]]]))
    >>> out.tolist()
    [[[-1.0, 1.0]]]
    """

    def __init__(self, nonzero: bool = False, eps: float = 1e-8) -> None:
        self.nonzero = nonzero
        self.eps = eps

    def apply(self, image, label, generator):
        x = _float(image)
        axes = tuple(range(1, x.dim()))
        if self.nonzero:
            mask = (x != 0).to(x.dtype)
            n = mask.sum(axes, keepdim=True).clamp_min(1)
            mean = (x * mask).sum(axes, keepdim=True) / n
            std = (((x - mean) * mask) ** 2).sum(axes, keepdim=True).div(n).sqrt()
            out = torch.where(mask.bool(), (x - mean) / (std + self.eps), x)
        else:
            mean = x.mean(axes, keepdim=True)
            std = x.std(axes, keepdim=True, correction=0)
            out = (x - mean) / (std + self.eps)
        return out, label


class RandomGaussianNoise(RandomTransform):
    """Add ``N(mean, std)`` noise to the image (drawn on its device).

    >>> import torch
    >>> t = RandomGaussianNoise(prob=1.0, std=0.1)
    >>> a = t(torch.zeros(1, 8, 8), generator=torch.Generator().manual_seed(1))
    >>> b = t(torch.zeros(1, 8, 8), generator=torch.Generator().manual_seed(1))
    >>> torch.equal(a, b), bool(a.std() > 0)
    (True, True)
    """

    def __init__(self, prob: float = 0.1, mean: float = 0.0, std: float = 0.1) -> None:
        super().__init__(prob)
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.mean, self.std = float(mean), float(std)

    def apply(self, image, label, generator):
        x = _float(image)
        g = device_generator(generator, x.device)
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return x + self.mean + self.std * noise, label
