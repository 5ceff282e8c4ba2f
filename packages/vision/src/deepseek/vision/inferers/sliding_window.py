"""Sliding-window inference over volumes larger than the network's input (MONAI's signature).

Windows of ``roi_size`` with ``overlap`` cover the volume (the last window along an axis is
moved back to end at the border); ``sw_batch_size`` windows run through ``predictor`` at a
time and their outputs are blended with a Gaussian (or constant) importance map into one
output volume. Memory: the output and weight accumulators (one volume each) plus one batch
of windows, whatever the volume size. Inputs smaller than ``roi_size`` are padded
symmetrically and the padding is cropped off the result.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["dense_window_starts", "importance_map", "sliding_window_inference"]

MODES = ("constant", "gaussian")


def importance_map(
    roi_size: Sequence[int],
    mode: str = "gaussian",
    sigma_scale: float | Sequence[float] = 0.125,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Blending weights of one window: ones, or a separable Gaussian with
    ``sigma = sigma_scale * roi_size`` peaking at 1, clamped below at ``max(min, 1e-3)``."""
    if mode == "constant":
        return torch.ones(tuple(roi_size), device=device)
    if mode != "gaussian":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    scales = (
        (sigma_scale,) * len(roi_size) if isinstance(sigma_scale, (int, float)) else sigma_scale
    )
    weight = torch.ones((), device=device)
    for size, s in zip(roi_size, scales):
        x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2.0
        g = torch.exp(x**2 / (-2 * (size * s) ** 2))
        weight = weight.unsqueeze(-1) * g
    return weight.clamp(min=max(float(weight.min()), 1e-3))


def dense_window_starts(
    image_size: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]
) -> list[tuple[int, ...]]:
    """Start corners of the windows covering ``image_size`` (MONAI's scan order)."""
    per_axis = []
    for size, roi, o in zip(image_size, roi_size, overlap):
        interval = roi if roi == size else max(int(roi * (1 - o)), 1)
        n = 1
        while (n - 1) * interval + roi < size:
            n += 1
        per_axis.append([min(i * interval, size - roi) for i in range(n)])
    return list(itertools.product(*per_axis))


def sliding_window_inference(
    inputs: torch.Tensor,
    roi_size: Sequence[int] | int,
    sw_batch_size: int,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    overlap: float | Sequence[float] = 0.25,
    mode: str = "gaussian",
    sigma_scale: float | Sequence[float] = 0.125,
    padding_mode: str = "constant",
    cval: float = 0.0,
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    *args: Any,
    **kwargs: Any,
) -> torch.Tensor:
    """Run ``predictor`` over ``inputs`` ``(N, C, *spatial)`` window by window and blend.

    Args:
        inputs: a batch of 2-D or 3-D images.
        roi_size: window size (an int for every axis; a size <= 0 means the whole axis).
        sw_batch_size: windows per ``predictor`` call.
        predictor: maps ``(B, C, *roi_size)`` to ``(B, C_out, *roi_size)``.
        overlap: fraction of a window shared with its neighbour, per axis or one for all.
        mode: ``"gaussian"`` (centre-weighted blending) or ``"constant"`` (plain average).
        sigma_scale: Gaussian sigma as a fraction of ``roi_size``.
        padding_mode, cval: ``F.pad`` mode and value when the input is smaller than a window.
        sw_device: where windows run (default: the input's device).
        device: where the output is accumulated (default: the input's device); pass
            ``"cpu"`` to keep a big output off the accelerator.
        args, kwargs: passed on to ``predictor``.

    Returns:
        ``(N, C_out, *spatial)`` on ``device``.

    >>> import torch
    >>> vol = torch.randn(1, 1, 40, 36, 30)
    >>> out = sliding_window_inference(vol, (16, 16, 16), 4, lambda x: x * 2)
    >>> torch.allclose(out, vol * 2, atol=1e-5)
    True
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() not in (4, 5):
        got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(
            f"sliding_window_inference: inputs must be (N, C, H, W) or (N, C, D, H, W), got {got}"
        )
    k = inputs.dim() - 2
    roi = (roi_size,) * k if isinstance(roi_size, int) else tuple(roi_size)
    if len(roi) != k:
        raise ValueError(
            f"roi_size {roi_size!r} must have {k} entries for inputs {tuple(inputs.shape)}"
        )
    image_size_in = tuple(inputs.shape[2:])
    roi = tuple(s if r <= 0 else int(r) for r, s in zip(roi, image_size_in))
    overlaps = (overlap,) * k if isinstance(overlap, (int, float)) else tuple(overlap)
    if len(overlaps) != k or not all(0 <= o < 1 for o in overlaps):
        raise ValueError(f"overlap must be in [0, 1) (one value or {k}), got {overlap!r}")
    if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be a positive int, got {sw_batch_size!r}")
    sw_device = torch.device(sw_device) if sw_device is not None else inputs.device
    device = torch.device(device) if device is not None else inputs.device

    pad = []
    for size, r in zip(reversed(image_size_in), reversed(roi)):
        diff = max(r - size, 0)
        pad += [diff // 2, diff - diff // 2]
    if any(pad):
        inputs = (
            F.pad(inputs, pad, mode=padding_mode, value=cval)
            if padding_mode == "constant"
            else F.pad(inputs, pad, mode=padding_mode)
        )
    image_size = tuple(inputs.shape[2:])
    starts = dense_window_starts(image_size, roi, overlaps)
    weight = importance_map(roi, mode, sigma_scale, device=sw_device)

    n = inputs.shape[0]
    output: torch.Tensor | None = None
    count: torch.Tensor | None = None
    jobs = [(b, s) for b in range(n) for s in starts]
    for first in range(0, len(jobs), sw_batch_size):
        chunk = jobs[first : first + sw_batch_size]
        windows = torch.stack(
            [
                inputs[b][(slice(None), *(slice(s, s + r) for s, r in zip(st, roi)))]
                for b, st in chunk
            ]
        ).to(sw_device)
        pred = predictor(windows, *args, **kwargs)
        if (
            not isinstance(pred, torch.Tensor)
            or tuple(pred.shape[2:]) != roi
            or pred.shape[0] != len(chunk)
        ):
            got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
            raise ValueError(
                f"sliding_window_inference: predictor must map ({len(chunk)}, C, *{roi}) to "
                f"({len(chunk)}, C_out, *{roi}), got {got}"
            )
        pred = (pred.float() * weight).to(device)
        if output is None:
            output = torch.zeros(
                (n, pred.shape[1], *image_size), dtype=torch.float32, device=device
            )
            count = torch.zeros((1, 1, *image_size), dtype=torch.float32, device=device)
            w = weight.to(device)
        for (b, st), p in zip(chunk, pred):
            window = tuple(slice(s, s + r) for s, r in zip(st, roi))
            output[(b, slice(None), *window)] += p
            if b == 0:
                count[(0, 0, *window)] += w
    output = output / count
    if any(pad):
        crop = [slice(None), slice(None)]
        for axis in range(k):
            lo = pad[2 * (k - 1 - axis)]
            crop.append(slice(lo, lo + image_size_in[axis]))
        output = output[tuple(crop)]
    return output
