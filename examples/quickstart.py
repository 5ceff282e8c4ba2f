"""The quickstart's model and data: a small CNN on scikit-learn's bundled 8x8 digits.

The digits (1,797 real handwritten images from UCI) ship inside scikit-learn, so nothing
is downloaded at run time. Used by ``examples/quickstart.yaml``; run this file for the
same job through the Python API (``python examples/quickstart.py --epochs 2``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset


class SmallCNN(nn.Module):
    def __init__(self, channels: int = 32, num_classes: int = 10, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * channels * 16, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def digits(split: str = "train", val_fraction: float = 0.2, seed: int = 0) -> TensorDataset:
    """The digits as (image [1, 8, 8] in 0..1, label) with a fixed train/val split."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(labels) * val_fraction)
    index = order[:n_val] if split == "val" else order[n_val:]
    return TensorDataset(images[index], labels[index])


def main(epochs: int = 12, output_dir: str = "runs/quickstart-python") -> dict:
    """The YAML job in Python: seed everything *before* building the model, so two runs
    give identical weights (the Trainer's own ``seed`` only covers training)."""
    import deepseek as ds
    from deepseek.callbacks import ModelCheckpoint

    ds.seed_everything(0)
    model = SmallCNN(channels=32)
    trainer = ds.Trainer(
        model,
        torch.optim.AdamW,
        {"lr": 0.003, "weight_decay": 0.0001},
        train_data=digits("train"),
        val_data=digits("val"),
        batch_size=32,
        loss_fn=torch.nn.functional.cross_entropy,
        metrics=["accuracy", "f1_macro"],
        max_epochs=epochs,
        precision="fp32",
        gradient_clip_norm=1.0,
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR,
        scheduler_kwargs={"T_max": epochs},
        scheduler_interval="epoch",
        callbacks=[ModelCheckpoint(monitor="val_accuracy", save_top_k=2, save_last=True)],
        seed=0,
        default_root_dir=output_dir,
    )
    trainer.fit()
    return trainer.metrics.as_floats()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--output-dir", default="runs/quickstart-python")
    cli = parser.parse_args()
    print(main(cli.epochs, cli.output_dir))
