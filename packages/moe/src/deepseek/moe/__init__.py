"""DeepSeek mixture-of-experts: routers, MoE layers, load balancing.

Names are imported on first use, so ``import deepseek.moe`` stays cheap::

    >>> import torch
    >>> from deepseek.moe import MoELayer
    >>> layer = MoELayer(d_model=8, d_hidden=16, num_experts=4, top_k=2)
    >>> layer(torch.randn(5, 8)).shape
    torch.Size([5, 8])
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "MoELayer": "deepseek.moe.layer",
    "Expert": "deepseek.moe.layer",
    "GroupedExperts": "deepseek.moe.experts",
    "FeedForward": "deepseek.moe.experts",
    "TopKRouter": "deepseek.moe.router",
    "RouterOutput": "deepseek.moe.router",
    "load_balancing_loss": "deepseek.moe.router",
    "device_balancing_loss": "deepseek.moe.router",
    "router_z_loss": "deepseek.moe.router",
    "MoELoadBalancing": "deepseek.moe.balancing",
    "auxiliary_loss": "deepseek.moe.balancing",
    "moe_layers": "deepseek.moe.balancing",
    "MoEClassifier": "deepseek.moe.classifier",
    "MoETransformerLM": "deepseek.moe.models",
    "MoETransformerConfig": "deepseek.moe.models",
    "shard_experts": "deepseek.moe.parallel",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deepseek.moe' has no attribute {name!r}")
