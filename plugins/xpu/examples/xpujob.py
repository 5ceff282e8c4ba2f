"""A tiny classification job for examples/xpu.yaml (random data, a small MLP)."""

import torch


def model(hidden: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
    )


def data(seed: int = 0, size: int = 256) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 8, generator=generator)
    return torch.utils.data.TensorDataset(x, (x.sum(dim=1) > 0).long())
