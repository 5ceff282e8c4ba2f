"""Slice overlays: image in grey, label contours/fill and prediction side by side."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from deepseek.checkpoint.atomic import write_atomically

__all__ = ["pick_slice", "save_overlay_png"]


def _to_numpy(x: torch.Tensor | np.ndarray | None) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _squeeze_channel(x: np.ndarray | None, spatial: int) -> np.ndarray | None:
    while x is not None and x.ndim > spatial:
        if x.shape[0] != 1:
            raise ValueError(f"overlay: expected a single channel, got shape {x.shape}")
        x = x[0]
    return x


def pick_slice(label: torch.Tensor | np.ndarray, axis: int = 0) -> int:
    """Index along ``axis`` of the slice with the most foreground (the middle if none)."""
    lab = _to_numpy(label)
    other = tuple(a for a in range(lab.ndim) if a != axis % lab.ndim)
    counts = (lab > 0).sum(axis=other)
    return int(counts.argmax()) if counts.max() > 0 else lab.shape[axis % lab.ndim] // 2


def save_overlay_png(
    path: str | os.PathLike,
    image: torch.Tensor | np.ndarray,
    label: torch.Tensor | np.ndarray | None = None,
    prediction: torch.Tensor | np.ndarray | None = None,
    slice_index: int | None = None,
    axis: int = 0,
    title: str | None = None,
    num_classes: int | None = None,
) -> Path:
    """Write a PNG of one slice of a 3-D volume (or a 2-D image): the image, the label
    overlay and the prediction overlay side by side. Channel axes of size 1 are dropped;
    the slice defaults to the one with the most label foreground. Written atomically.

    >>> import tempfile, torch
    >>> img = torch.rand(1, 8, 16, 16); lab = torch.zeros(1, 8, 16, 16); lab[0, 4, 4:9, 4:9] = 1
    >>> p = save_overlay_png(f"{tempfile.mkdtemp()}/o.png", img, lab, lab)
    >>> p.stat().st_size > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    img = _to_numpy(image)
    spatial = 3 if img.ndim in (3, 4) and not (img.ndim == 3 and img.shape[0] == 1) else 2
    img = _squeeze_channel(img, spatial)
    lab = _squeeze_channel(_to_numpy(label), spatial)
    pred = _squeeze_channel(_to_numpy(prediction), spatial)
    for name, arr in (("label", lab), ("prediction", pred)):
        if arr is not None and arr.shape != img.shape:
            raise ValueError(
                f"overlay: {name} shape {arr.shape} differs from image shape {img.shape}"
            )
    if spatial == 3:
        if slice_index is None:
            slice_index = pick_slice(
                lab if lab is not None else (pred if pred is not None else img), axis
            )
        take = lambda a: None if a is None else np.take(a, slice_index, axis=axis)  # noqa: E731
        img, lab, pred = take(img), take(lab), take(pred)
    n_classes = num_classes or int(max([1] + [a.max() for a in (lab, pred) if a is not None])) + 1
    colors = ListedColormap(
        [(0, 0, 0, 0)] + [plt.cm.tab10(i % 10) for i in range(max(n_classes - 1, 1))]
    )
    panels = [("image", None)] + [
        (n, a) for n, a in (("label", lab), ("prediction", pred)) if a is not None
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, overlay) in zip(axes[0], panels):
        ax.imshow(img, cmap="gray")
        if overlay is not None:
            ax.imshow(
                np.ma.masked_equal(overlay.astype(int), 0),
                cmap=colors,
                alpha=0.5,
                vmin=0,
                vmax=max(n_classes - 1, 1),
                interpolation="nearest",
            )
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        path = write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    finally:
        plt.close(fig)
    return path
