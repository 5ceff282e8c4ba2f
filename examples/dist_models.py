"""Models for the distributed examples (used by ``examples/dist_quickstart.yaml``)."""

from __future__ import annotations

from quickstart import SmallCNN
from torch import nn


def sequential_cnn(channels: int = 32, num_classes: int = 10) -> nn.Sequential:
    """The quickstart CNN as one ``nn.Sequential`` (same layers, same forward), so the
    pipeline strategy can cut it into stages and FSDP can shard its blocks."""
    cnn = SmallCNN(channels=channels, num_classes=num_classes)
    return nn.Sequential(cnn.features, cnn.head)
