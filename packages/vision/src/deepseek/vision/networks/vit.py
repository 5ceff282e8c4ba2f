"""Vision Transformer for volumes (and images): patch embedding, pre-norm transformer
blocks, optional classification head. Constructor arguments follow ``monai.networks.nets.ViT``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepseek.vision.networks.blocks import check_channels, check_spatial_dims, conv

__all__ = ["PatchEmbedding", "TransformerBlock", "ViT"]


def _as_tuple(name: str, value: int | Sequence[int], n: int) -> tuple[int, ...]:
    out = (value,) * n if isinstance(value, int) else tuple(value)
    if len(out) != n or not all(isinstance(v, int) and v > 0 for v in out):
        raise ValueError(f"{name} must be a positive int or {n} of them, got {value!r}")
    return out


class PatchEmbedding(nn.Module):
    """Non-overlapping patches -> tokens (a strided conv) plus learned position embeddings."""

    def __init__(
        self,
        in_channels: int,
        img_size: Sequence[int],
        patch_size: Sequence[int],
        hidden_size: int,
        spatial_dims: int = 3,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        for s, p in zip(img_size, patch_size):
            if s % p:
                raise ValueError(
                    f"img_size {tuple(img_size)} must be divisible by patch_size "
                    f"{tuple(patch_size)} along every axis"
                )
        self.grid = tuple(s // p for s, p in zip(img_size, patch_size))
        self.proj = conv(spatial_dims)(in_channels, hidden_size, patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.zeros(1, math.prod(self.grid), hidden_size))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(x).flatten(2).transpose(1, 2) + self.position)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``; SDPA attention."""

    def __init__(
        self, hidden_size: int, mlp_dim: int, num_heads: int, dropout_rate: float = 0.0
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate
        self.norm1 = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout_rate),
            nn.Linear(mlp_dim, hidden_size),
            nn.Dropout(dropout_rate),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.num_heads, -1).unbind(2)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=self.dropout_rate if self.training else 0.0,
        )
        x = x + self.proj(attn.transpose(1, 2).reshape(n, t, c))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision Transformer over 3-D (or 2-D) inputs of a fixed ``img_size``.

    With ``classification=True`` returns logits ``(N, num_classes)`` from a class token;
    otherwise the final normalised tokens ``(N, n_patches, hidden_size)``.
    :meth:`forward_features` returns the tokens and every block's output (UNETR reads them).

    >>> import torch
    >>> vit = ViT(in_channels=1, img_size=32, patch_size=16, hidden_size=32, mlp_dim=64,
    ...           num_layers=2, num_heads=4, classification=True, num_classes=3)
    >>> vit(torch.randn(2, 1, 32, 32, 32)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        in_channels: int,
        img_size: int | Sequence[int],
        patch_size: int | Sequence[int],
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        classification: bool = False,
        num_classes: int = 2,
        dropout_rate: float = 0.0,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_channels("in_channels", in_channels)
        check_channels("num_layers", num_layers)
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate!r}")
        self.img_size = _as_tuple("img_size", img_size, spatial_dims)
        self.patch_size = _as_tuple("patch_size", patch_size, spatial_dims)
        self.hidden_size = hidden_size
        self.classification = classification
        self.patch_embedding = PatchEmbedding(
            in_channels, self.img_size, self.patch_size, hidden_size, spatial_dims, dropout_rate
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, mlp_dim, num_heads, dropout_rate)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)
        if classification:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
            self.classification_head = nn.Linear(
                hidden_size, check_channels("num_classes", num_classes)
            )

    def _check(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, *self.img_size)
        if (
            not isinstance(x, torch.Tensor)
            or tuple(x.shape[1:]) != expected
            or x.dim() != len(expected) + 1
        ):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__} was built for inputs (N, {', '.join(map(str, expected))}) "
                f"(in_channels={self.in_channels}, img_size={self.img_size}), got {got}; "
                "crop or resize, or use sliding_window_inference for larger volumes"
            )

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check(x)
        x = self.patch_embedding(x)
        if self.classification:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        hidden = []
        for block in self.blocks:
            x = block(x)
            hidden.append(x)
        return self.norm(x), hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.forward_features(x)
        if self.classification:
            return self.classification_head(x[:, 0])
        return x
