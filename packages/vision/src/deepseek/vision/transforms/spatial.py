"""Spatial transforms: elastic deformation, affine, flips, 90-degree rotations.

All resample with ``torch.nn.functional.grid_sample`` on the tensor's device: images with
(tri)linear interpolation, labels with nearest neighbour so label values never blend. On
the CPU a single volume's ``grid_sample`` is split over torch's threads (torch runs one
thread per batch element there).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from deepseek.vision.transforms.base import (
    RandomTransform,
    as_range,
    check_pair,
    device_generator,
    new_generator,
    uniform,
)

__all__ = [
    "RandomAffine",
    "RandomElasticDeformation",
    "RandomFlip",
    "RandomRotate90",
    "identity_grid",
    "resample",
]

PADDING_MODES = ("zeros", "border", "reflection")
# Flat voxel indices summed in float32 are exact below 2**24 (a 256^3 volume); larger
# volumes sum them in int64.
_FLOAT32_EXACT_VOXELS = 1 << 24
_WIDE_INTS = (torch.int16, torch.int32, torch.int64)


def identity_grid(shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``grid_sample``'s identity grid for ``shape`` (align_corners=True): ``(1, *shape, k)``
    with the last axis in (x, y[, z]) = reversed spatial order."""
    k = len(shape)
    theta = torch.eye(k, k + 1, device=device, dtype=dtype).unsqueeze(0)
    return F.affine_grid(theta, [1, 1, *shape], align_corners=True)


@functools.lru_cache(maxsize=16)
def _coarse_identity(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``identity_grid`` as ``(1, k, *shape)``, cached per shape (never modified in place)."""
    return identity_grid(shape, device, dtype).movedim(-1, 1)


def _sample(inp: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    """``F.grid_sample(inp, grid, align_corners=True)`` for one volume ``(1, C, *spatial)``.

    On the CPU, torch's ``grid_sample`` runs one thread per batch element, so a single
    volume would use one core however many torch has. The voxels of the grid are split
    into ``n`` equal batch elements, each sampling the same (expanded, not copied) input:
    the same numbers, computed on ``n`` threads.
    """
    voxels = grid[0, ..., 0].numel()
    n = torch.get_num_threads() if inp.device.type == "cpu" and voxels >= 1 << 15 else 1
    while voxels % n:  # the largest thread count that divides the voxels evenly
        n -= 1
    if n == 1:
        return F.grid_sample(inp, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    k = grid.shape[-1]
    channels = inp.shape[1]
    split = grid.reshape(n, *([1] * (k - 1)), voxels // n, k)
    out = F.grid_sample(
        inp.expand(n, *inp.shape[1:]),
        split,
        mode=mode,
        padding_mode=padding_mode,
        align_corners=True,
    )
    out = out.reshape(n, channels, voxels // n).transpose(0, 1)
    return out.reshape(1, channels, *grid.shape[1:-1])


def resample(
    image: torch.Tensor,
    label: torch.Tensor | None,
    grid: torch.Tensor,
    padding_mode: str = "zeros",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample the channel-first ``image`` (linear) and ``label`` (nearest) at ``grid``
    (``(1, *out_spatial, k)``, ``grid_sample``'s normalised coordinates, aligned corners).

    ``padding_mode`` is the image's; the label is padded with 0 for ``"zeros"`` and with its
    border otherwise. The results equal ``F.grid_sample`` on each (tested), computed on all
    of torch's CPU threads.

    >>> import torch
    >>> image, label = torch.arange(4.0).view(1, 2, 2), torch.tensor([[[0, 1], [2, 3]]])
    >>> identity = identity_grid((2, 2), torch.device("cpu"), torch.float32)
    >>> out, lab = resample(image, label, identity)
    >>> torch.equal(out, image), torch.equal(lab, label)
    (True, True)
    """
    dtype = image.dtype if image.is_floating_point() else torch.float32
    out = _sample(image.unsqueeze(0).to(dtype), grid.to(dtype), "bilinear", padding_mode)
    out = out[0].to(image.dtype)
    if label is None:
        return out, None
    if label.device.type == "cpu":
        zeros = padding_mode == "zeros"
        if label.dtype in _WIDE_INTS and label.numel() >= 1 << 15:
            # The gather is memory-bound: move class indices as bytes when they fit.
            low, high = label.aminmax()
            if low >= 0 and high <= 255:
                return out, _nearest_cpu(label.to(torch.uint8), grid, zeros).to(label.dtype)
        return out, _nearest_cpu(label, grid, zeros)
    label_padding = "zeros" if padding_mode == "zeros" else "border"
    lab = _sample(label.unsqueeze(0).to(grid.dtype), grid, "nearest", label_padding)[0]
    return out, lab.to(label.dtype)


def _nearest_cpu(label: torch.Tensor, grid: torch.Tensor, zeros: bool) -> torch.Tensor:
    """``F.grid_sample(label, grid, mode="nearest", align_corners=True)`` with padding
    ``"zeros"`` or ``"border"``, as an index gather in the label's own dtype: the same
    source coordinates rounded the same way (half to even), but vectorised and threaded,
    with no float copy of the label (torch's 3-D CPU kernel is a scalar loop per voxel).
    """
    spatial = label.shape[1:]
    k = len(spatial)
    exact = math.prod(spatial) < _FLOAT32_EXACT_VOXELS
    flat = outside = None
    stride = 1
    for axis in range(k):  # grid's last axis is x, y[, z]: the spatial axes reversed
        size = spatial[k - 1 - axis]
        # grid_sample's unnormalisation with aligned corners, ((g + 1) / 2) * (size - 1).
        u = grid[0, ..., axis].add(1).div_(2).mul_(size - 1).round_()
        if zeros:
            beyond = (u < 0).logical_or_(u > size - 1)
            outside = beyond if outside is None else outside.logical_or_(beyond)
        u = u.clamp_(0, size - 1) if exact else u.clamp_(0, size - 1).to(torch.int64)
        flat = u if flat is None else flat.add_(u, alpha=stride)
        stride *= size
    index = flat.to(torch.int64).reshape(-1)
    channels = label.shape[0]
    out = label.reshape(channels, -1).index_select(1, index)
    out = out.reshape(channels, *grid.shape[1:-1])
    return out.masked_fill_(outside, 0) if outside is not None else out


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _smoothing_matrix(n: int, kernel: torch.Tensor, reflect: bool) -> torch.Tensor:
    """``(n, n)`` matrix of 1-D convolution with ``kernel`` over ``n`` samples padded by
    reflection (``F.pad``'s "reflect": the edge sample is not repeated) or replication."""
    r = kernel.numel() // 2
    src = torch.arange(n, device=kernel.device).view(n, 1) + torch.arange(
        -r, r + 1, device=kernel.device
    )
    if reflect:
        src = torch.where(src < 0, -src, src)
        src = torch.where(src > n - 1, 2 * (n - 1) - src, src)
    else:
        src = src.clamp(0, n - 1)
    m = torch.zeros(n, n, device=kernel.device, dtype=kernel.dtype)
    return m.scatter_add_(1, src, kernel.expand(n, -1).contiguous())


def gaussian_smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(N, C, *spatial)`` per channel (reflect padding,
    or replicate where an axis is not longer than the kernel's radius)."""
    if sigma <= 0:
        return field
    k = len(field.shape) - 2
    kernel = _gaussian_kernel(sigma, field.device, field.dtype)
    r = kernel.numel() // 2
    reflect = all(s > r for s in field.shape[2:])
    # One small (n, n) matrix per axis, padding folded in: on these coarse grids a matmul
    # beats a grouped 1-D convolution (and its padded copy) several times over.
    for axis in range(2, k + 2):
        m = _smoothing_matrix(field.shape[axis], kernel, reflect)
        field = (field.movedim(axis, -1) @ m.T).movedim(-1, axis)
    return field


def _lerp_axis(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, L, C)`` -> ``(B, size, C)``: linear interpolation with aligned corners along
    the middle axis, with the ``C`` values of a sample contiguous. Run as a channels-last
    2-D ``F.interpolate`` (``(B, C, 1, L)``): its kernel streams over ``C``, which is large
    here (a whole plane of the grid), instead of gathering one value at a time."""
    x = x.contiguous().permute(0, 2, 1).unsqueeze(2)
    out = F.interpolate(x, size=(1, size), mode="bilinear", align_corners=True)
    return out.squeeze(2).permute(0, 2, 1).contiguous()


def _upsample_channels_last(field: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(1, k, *coarse)`` -> ``(1, *shape, k)``: (bi/tri)linear upsampling with aligned
    corners, as ``F.interpolate`` computes it, written directly in channel-last order
    (grid_sample's layout), one axis at a time from the last (the separable form costs
    two taps per output and axis)."""
    coarse = field.shape[2:]
    k = len(shape)
    x = field[0].movedim(0, -1)  # (*coarse, k)
    for axis in reversed(range(k)):
        batch = math.prod(coarse[:axis])
        inner = math.prod(shape[axis + 1 :]) * k
        x = _lerp_axis(x.reshape(batch, coarse[axis], inner), shape[axis])
    return x.reshape(1, *shape, k)


class RandomElasticDeformation(RandomTransform):
    """Elastic deformation with a smooth random displacement field.

    A field of uniform noise in [-1, 1] is drawn on a coarse grid (one control point every
    ``max(1, sigma // 2)`` voxels), smoothed with a Gaussian of ``sigma`` voxels, scaled so
    that its largest component is ``alpha`` voxels, upsampled (tri)linearly to the volume and
    applied with one ``grid_sample``. ``alpha`` is the displacement magnitude (MONAI's
    ``magnitude_range``; here it is the peak displacement in voxels), ``sigma`` the
    smoothness (MONAI's ``sigma_range``); numbers or ``(low, high)`` ranges drawn per call.

    Cost: everything before the sampling works on the coarse grid (the Gaussian is one small
    matrix per axis, reflection padding folded in) or is one streaming pass per axis (the
    separable upsampling, written directly in ``grid_sample``'s channel-last layout), so the
    two ``grid_sample`` calls (image: bilinear; label: nearest) are most of the time; on the
    CPU each is split over torch's threads (see :func:`resample`).

    Args:
        alpha: displacement magnitude in voxels, or a range.
        sigma: smoothing of the displacement in voxels, or a range.
        prob: probability of applying the deformation.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"`` for the image.

    >>> import torch
    >>> t = RandomElasticDeformation(alpha=(10, 30), sigma=(6, 8), prob=1.0)
    >>> image = torch.randn(1, 32, 32, 32)
    >>> label = (image > 1).long()
    >>> g = torch.Generator().manual_seed(0)
    >>> out, lab = t(image, label, generator=g)
    >>> out.shape, set(lab.unique().tolist()) <= {0, 1}
    (torch.Size([1, 32, 32, 32]), True)
    """

    def __init__(
        self,
        alpha: float | Sequence[float] = (10.0, 30.0),
        sigma: float | Sequence[float] = (6.0, 8.0),
        prob: float = 0.1,
        padding_mode: str = "border",
    ) -> None:
        super().__init__(prob)
        self.alpha = as_range("alpha", alpha)
        self.sigma = as_range("sigma", sigma)
        if self.alpha[0] < 0 or self.sigma[0] <= 0:
            raise ValueError(f"alpha must be >= 0 and sigma > 0, got {alpha!r}, {sigma!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode

    def _coarse_displacement(
        self, shape: Sequence[int], generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """``(1, k, *coarse)`` smoothed displacement in voxels (spatial-axis order) on the
        control-point grid, whose corners coincide with the volume's corners."""
        alpha = float(uniform(generator, *self.alpha))
        sigma = float(uniform(generator, *self.sigma))
        step = max(1, int(sigma // 2))
        coarse = [max(2, -(-s // step) + 1) for s in shape]
        k = len(shape)
        g = device_generator(generator, device)
        noise = torch.rand((1, k, *coarse), generator=g, device=device) * 2 - 1
        field = gaussian_smooth(noise, sigma / step)
        # Largest |component| -> alpha voxels (a tensor op: no host sync).
        peak = field.abs().amax(dim=tuple(range(2, k + 2)), keepdim=True).clamp_min(1e-12)
        return field * (alpha / peak)

    def displacement(
        self, shape: Sequence[int], generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """The full-resolution displacement in voxels, ``(k, *shape)`` in spatial-axis order
        (what :meth:`apply` adds to each voxel's position for the same generator state)."""
        field = self._coarse_displacement(shape, generator, device)
        mode = "trilinear" if len(shape) == 3 else "bilinear"
        return F.interpolate(field, size=tuple(shape), mode=mode, align_corners=True)[0]

    def apply(self, image, label, generator):
        shape = tuple(image.shape[1:])
        k = len(shape)
        field = self._coarse_displacement(shape, generator, image.device)
        coarse = field.shape[2:]
        # Voxels -> grid_sample's normalised units (align_corners=True), x/y/z channel order.
        scale = torch.tensor([2.0 / max(s - 1, 1) for s in shape], device=image.device)
        field = (field * scale.view(1, k, *([1] * k))).flip(1)
        # The identity is linear in the position, so it can be added on the coarse grid;
        # one separable linear upsampling (a small matrix per axis, applied with einsum
        # straight into grid_sample's channel-last layout) then yields the sampling grid.
        identity = _coarse_identity(tuple(coarse), image.device, field.dtype)
        grid = _upsample_channels_last(identity + field, shape)
        return resample(image, label, grid, self.padding_mode)


class RandomAffine(RandomTransform):
    """Random rotation, scaling, shear and translation, applied with one ``grid_sample``.

    Args:
        rotate_range: radians, one number (range ``(-v, v)``) or pair per rotation plane
            (1 plane in 2-D; 3 in 3-D) or one for all.
        scale_range: relative scale change, e.g. 0.1 gives factors in [0.9, 1.1].
        shear_range: shear factors in ``(-v, v)``.
        translate_range: voxels in ``(-v, v)``.
        prob: probability of applying it.
        padding_mode: for the image; labels are padded with 0 (or the border).

    >>> import torch
    >>> t = RandomAffine(rotate_range=0.3, scale_range=0.1, prob=1.0)
    >>> img, lab = t(torch.rand(1, 16, 16), torch.zeros(1, 16, 16, dtype=torch.long))
    >>> img.shape, lab.dtype
    (torch.Size([1, 16, 16]), torch.int64)
    """

    def __init__(
        self,
        rotate_range: float | Sequence[float] = 0.0,
        scale_range: float = 0.0,
        shear_range: float = 0.0,
        translate_range: float = 0.0,
        prob: float = 0.1,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__(prob)
        self.rotate_range = as_range("rotate_range", rotate_range, symmetric=True)
        self.scale_range = as_range("scale_range", scale_range, symmetric=True)
        self.shear_range = as_range("shear_range", shear_range, symmetric=True)
        self.translate_range = as_range("translate_range", translate_range, symmetric=True)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode

    def matrix(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """A random ``(k+1, k+1)`` voxel-space affine (about the centre, spatial-axis order)."""
        planes = [(0, 1)] if k == 2 else [(1, 2), (0, 2), (0, 1)]
        m = torch.eye(k + 1, dtype=torch.float64)
        for a, b in planes:
            angle = float(uniform(generator, *self.rotate_range))
            r = torch.eye(k + 1, dtype=torch.float64)
            c, s = math.cos(angle), math.sin(angle)
            r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
            m = r @ m
        shear = torch.eye(k + 1, dtype=torch.float64)
        for a in range(k):
            for b in range(k):
                if a != b:
                    shear[a, b] = float(uniform(generator, *self.shear_range))
        scale = torch.diag(
            torch.cat(
                [1 + uniform(generator, *self.scale_range, n=k), torch.ones(1, dtype=torch.float64)]
            )
        )
        m = m @ shear @ scale
        m[:k, k] = uniform(generator, *self.translate_range, n=k)
        return m

    def apply(self, image, label, generator):
        shape = image.shape[1:]
        k = len(shape)
        m = self.matrix(k, generator)
        # voxel space (centred) -> normalised: A_n = D^-1 A D, D = diag((size - 1) / 2).
        half = torch.tensor([max(s - 1, 1) / 2 for s in shape], dtype=torch.float64)
        a = m[:k, :k] * half.view(1, k) / half.view(k, 1)
        t = m[:k, k] / half
        theta = torch.cat([a, t.view(k, 1)], dim=1).flip(0, 1)  # spatial order -> x, y, z
        theta = torch.cat([theta[:, 1:], theta[:, :1]], dim=1)  # move translation back last
        theta = theta.to(device=image.device, dtype=torch.float32).unsqueeze(0)
        grid = F.affine_grid(theta, [1, 1, *shape], align_corners=True)
        return resample(image, label, grid, self.padding_mode)


class RandomFlip(RandomTransform):
    """Flip each spatial axis (``spatial_axis``: all by default) with probability ``prob``.

    >>> import torch
    >>> img = torch.arange(4.).view(1, 2, 2)
    >>> RandomFlip(prob=1.0, spatial_axis=1)(img).tolist()
    [[[1.0, 0.0], [3.0, 2.0]]]
    """

    def __init__(self, prob: float = 0.5, spatial_axis: int | Sequence[int] | None = None) -> None:
        super().__init__(prob)
        self.spatial_axis = (spatial_axis,) if isinstance(spatial_axis, int) else spatial_axis

    def __call__(self, image, label=None, *, generator=None):  # a coin per axis, not one gate
        k = check_pair(type(self).__name__, image, label)
        g = new_generator(generator)
        axes = range(k) if self.spatial_axis is None else self.spatial_axis
        for a in axes:
            if not -k <= a < k:
                raise ValueError(f"RandomFlip: spatial_axis {a} out of range for {k} spatial dims")
        coins = torch.rand(len(list(axes)), generator=g) < self.prob
        dims = [1 + (a % k) for a, c in zip(axes, coins.tolist()) if c]
        if dims:
            image = image.flip(dims)
            label = None if label is None else label.flip(dims)
        return image if label is None else (image, label)

    def apply(self, image, label, generator):  # pragma: no cover - __call__ does the work
        raise NotImplementedError


class RandomRotate90(RandomTransform):
    """Rotate by ``k * 90`` degrees (k in 1..max_k) in the plane of ``spatial_axes``.

    >>> import torch
    >>> img = torch.arange(4.).view(1, 2, 2)
    >>> out = RandomRotate90(prob=1.0, max_k=1)(img)
    >>> out.tolist()
    [[[1.0, 3.0], [0.0, 2.0]]]
    """

    def __init__(
        self, prob: float = 0.1, max_k: int = 3, spatial_axes: tuple[int, int] = (0, 1)
    ) -> None:
        super().__init__(prob)
        if max_k not in (1, 2, 3):
            raise ValueError(f"max_k must be 1, 2 or 3, got {max_k!r}")
        self.max_k = max_k
        self.spatial_axes = tuple(spatial_axes)

    def apply(self, image, label, generator):
        k = image.dim() - 1
        a, b = (1 + (x % k) for x in self.spatial_axes)
        if a == b:
            raise ValueError(f"RandomRotate90: spatial_axes must differ, got {self.spatial_axes}")
        turns = int(torch.randint(1, self.max_k + 1, (), generator=generator))
        image = torch.rot90(image, turns, (a, b))
        return image, None if label is None else torch.rot90(label, turns, (a, b))
