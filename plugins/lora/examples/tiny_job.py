"""The model and data of examples/lora.yaml: a tiny attention classifier whose layer
names look like BERT's (``layers.0.query``), and random token features."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query, self.key = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.query(x) @ self.key(x).transpose(-1, -2) / x.shape[-1] ** 0.5
        return self.norm(x + scores.softmax(-1) @ self.value(x))


class TinyClassifier(nn.Module):
    def __init__(self, features: int = 4, dim: int = 16, layers: int = 2, classes: int = 2):
        super().__init__()
        self.embed = nn.Linear(features, dim)
        self.layers = nn.ModuleList(Block(dim) for _ in range(layers))
        self.classifier = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        return self.classifier(h.mean(dim=1))


def data(n: int = 64) -> torch.utils.data.TensorDataset:
    x = torch.randn(n, 6, 4, generator=torch.Generator().manual_seed(0))
    return torch.utils.data.TensorDataset(x, (x.sum(dim=(1, 2)) > 0).long())
