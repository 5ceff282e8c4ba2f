"""A tiny classification job for examples/tensorboard.yaml (random data, a linear model)."""

import torch


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def data(seed: int = 0, size: int = 64) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 4, generator=generator)
    return torch.utils.data.TensorDataset(x, (x.sum(dim=1) > 0).long())
