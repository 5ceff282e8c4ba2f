"""The 3-D CT segmentation example's data, model wrapper and overlay callback.

Used by ``examples/segmentation_3d.yaml`` (``deepseek train examples/segmentation_3d.yaml``):
synthetic CT phantoms (``deepseek.vision.data.make_ct_phantom``: liver and kidneys as
textured ellipsoids in a noisy body, with a bone distractor) are written to HDF5 once, then
training reads label-balanced patches through ``PatchDataset`` (only each patch's hyperslab
is read) with CT windowing and elastic augmentation, and validation segments whole held-out
volumes by sliding-window inference and reports their mean foreground Dice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from deepseek.callbacks import Callback
from deepseek.plugins import registry
from deepseek.utils.data import H5Dataset
from deepseek.vision.data import PatchDataset, write_phantom_h5
from deepseek.vision.inferers import sliding_window_inference
from deepseek.vision.losses import DiceFocalLoss
from deepseek.vision.metrics import dice_score
from deepseek.vision.transforms import (
    Compose,
    CTWindow,
    RandomElasticDeformation,
    RandomGaussianNoise,
)
from deepseek.vision.visualize import save_overlay_png

NUM_CLASSES = 3  # background, liver, kidney
WINDOW = CTWindow(level=40, width=400)  # soft-tissue window, HU -> [0, 1]


def phantom_file(data_dir: str, split: str, n: int, size: int) -> Path:
    """The split's HDF5 file, generated on first use (seeds differ per split)."""
    path = Path(data_dir) / f"{split}_{n}x{size}.h5"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_phantom_h5(path, n, (size, size, size), seed={"train": 1, "val": 2}[split])
    return path


def train_patches(
    data_dir: str = "runs/segmentation_3d/data",
    n_volumes: int = 16,
    size: int = 64,
    patch_size: Sequence[int] = (32, 32, 32),
    samples_per_volume: int = 8,
    alpha: Sequence[float] = (2.0, 4.0),
    sigma: Sequence[float] = (4.0, 6.0),
    elastic_prob: float = 0.5,
) -> PatchDataset:
    """Label-balanced patches (half with foreground), windowed, elastically deformed.

    ``alpha`` is the peak displacement in voxels: (2, 4) on these 64^3 phantoms is the
    same relative deformation as the (10, 30) range on 512^3 CT volumes.
    """
    augment = Compose(
        [
            WINDOW,
            RandomElasticDeformation(alpha=alpha, sigma=sigma, prob=elastic_prob),
            RandomGaussianNoise(prob=0.3, std=0.02),
        ]
    )
    return PatchDataset(
        phantom_file(data_dir, "train", n_volumes, size),
        patch_size,
        samples_per_volume=samples_per_volume,
        pos=1.0,
        neg=1.0,
        transform=augment,
        num_classes=NUM_CLASSES,
    )


class _Windowed(Dataset):
    def __init__(self, volumes: H5Dataset) -> None:
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.volumes[i]
        return WINDOW(image.float()), label.long()


def val_volumes(
    data_dir: str = "runs/segmentation_3d/data", n_volumes: int = 4, size: int = 64
) -> Dataset:
    """Whole held-out phantoms (other seeds than training), windowed."""
    return _Windowed(H5Dataset(phantom_file(data_dir, "val", n_volumes, size)))


class PhantomSegmenter(nn.Module):
    """A registered network (``unetplusplus3d`` by default) that validates like a deployment:
    sliding-window inference over whole volumes, Dice per foreground class."""

    def __init__(
        self,
        network: str = "unetplusplus3d",
        features: Sequence[int] = (8, 16, 32),
        roi_size: Sequence[int] = (32, 32, 32),
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        **network_options: Any,
    ) -> None:
        super().__init__()
        self.net = registry("model").create(
            network,
            in_channels=1,
            out_channels=NUM_CLASSES,
            features=tuple(features),
            **network_options,
        )
        self.roi_size = tuple(roi_size)
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self.val_loss = DiceFocalLoss(to_onehot_y=True, softmax=True, gamma=2.0)
        self.last_validation: tuple[torch.Tensor, ...] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        image, label = batch
        logits = sliding_window_inference(
            image, self.roi_size, self.sw_batch_size, self.net, overlap=self.overlap
        )
        scores = dice_score(logits, label, NUM_CLASSES)  # (N, foreground classes)
        self.last_validation = (image[:1], label[:1], logits[:1].argmax(1, keepdim=True))
        values = {"loss": self.val_loss(logits, label), "dice": torch.nanmean(scores)}
        for c in range(scores.shape[1]):
            values[f"dice_class{c + 1}"] = torch.nanmean(scores[:, c])
        return values


class OverlayWriter(Callback):
    """After every validation, a PNG of the first validation volume: image, label overlay,
    prediction overlay (the slice with the most foreground)."""

    def __init__(self, folder: str = "overlays") -> None:
        self.folder = folder

    def on_validation_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        model = trainer.unwrapped_model
        model = getattr(model, "module", model)
        sample = getattr(model, "last_validation", None)
        if sample is None or not trainer.is_global_zero:
            return
        image, label, pred = (t[0].cpu() for t in sample)
        out = Path(trainer.default_root_dir or ".") / self.folder
        dice = (
            trainer.metrics.as_floats().get("val_dice")
            if hasattr(trainer.metrics, "as_floats")
            else None
        )
        title = f"epoch {trainer.current_epoch}" + (
            f", Dice {dice:.3f}" if dice is not None else ""
        )
        save_overlay_png(
            out / f"epoch_{trainer.current_epoch:03d}.png", image, label, pred, title=title
        )
