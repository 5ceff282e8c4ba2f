"""UNETR (Hatamizadeh et al., 2022): a ViT encoder with a convolutional decoder.

Patches of 16 voxels; the hidden states after blocks L/4, L/2 and 3L/4 are reshaped to
feature maps and upsampled to 1/8, 1/4 and 1/2 resolution as skips; the last one feeds the
decoder from 1/16. Constructor arguments follow ``monai.networks.nets.UNETR``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deepseek.vision.networks.blocks import ConvBlock, check_channels, conv, conv_transpose
from deepseek.vision.networks.unet import UpBlock
from deepseek.vision.networks.vit import ViT

__all__ = ["UNETR"]

PATCH = 16


class _Project(nn.Sequential):
    """Tokens' feature map -> ``n_up`` times (2x transposed conv + ConvBlock)."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, n_up: int, norm: str) -> None:
        layers: list[nn.Module] = []
        for k in range(n_up):
            layers.append(
                conv_transpose(spatial_dims)(in_ch if k == 0 else out_ch, out_ch, 2, stride=2)
            )
            layers.append(ConvBlock(spatial_dims, out_ch, out_ch, norm))
        super().__init__(*layers)


class UNETR(nn.Module):
    """UNETR for volumes of a fixed ``img_size`` (each side divisible by 16).

    >>> import torch
    >>> net = UNETR(in_channels=1, out_channels=2, img_size=32, feature_size=4,
    ...             hidden_size=32, mlp_dim=64, num_heads=4, num_layers=4)
    >>> net(torch.randn(1, 1, 32, 32, 32)).shape
    torch.Size([1, 2, 32, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: int | Sequence[int],
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        num_layers: int = 12,
        norm_name: str = "instance",
        dropout_rate: float = 0.0,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        check_channels("out_channels", out_channels)
        check_channels("feature_size", feature_size)
        if num_layers % 4:
            raise ValueError(f"UNETR needs num_layers divisible by 4, got {num_layers}")
        self.vit = ViT(
            in_channels,
            img_size,
            PATCH,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout_rate=dropout_rate,
            spatial_dims=spatial_dims,
        )
        self.spatial_dims = spatial_dims
        self.grid = self.vit.patch_embedding.grid
        fs, h = feature_size, hidden_size
        self.taps = [num_layers // 4 - 1, num_layers // 2 - 1, 3 * num_layers // 4 - 1]
        self.encoder1 = ConvBlock(spatial_dims, in_channels, fs, norm_name)
        self.encoder2 = _Project(spatial_dims, h, 2 * fs, 3, norm_name)  # 1/16 -> 1/2
        self.encoder3 = _Project(spatial_dims, h, 4 * fs, 2, norm_name)  # -> 1/4
        self.encoder4 = _Project(spatial_dims, h, 8 * fs, 1, norm_name)  # -> 1/8
        self.decoder5 = UpBlock(spatial_dims, h, 8 * fs, 8 * fs, norm_name, "leakyrelu", 0.0)
        self.decoder4 = UpBlock(spatial_dims, 8 * fs, 4 * fs, 4 * fs, norm_name, "leakyrelu", 0.0)
        self.decoder3 = UpBlock(spatial_dims, 4 * fs, 2 * fs, 2 * fs, norm_name, "leakyrelu", 0.0)
        self.decoder2 = UpBlock(spatial_dims, 2 * fs, fs, fs, norm_name, "leakyrelu", 0.0)
        self.out = conv(spatial_dims)(fs, out_channels, 1)

    def _to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, hidden = self.vit.forward_features(x)
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(self._to_map(hidden[self.taps[0]]))
        enc3 = self.encoder3(self._to_map(hidden[self.taps[1]]))
        enc4 = self.encoder4(self._to_map(hidden[self.taps[2]]))
        d = self.decoder5(self._to_map(tokens), enc4)
        d = self.decoder4(d, enc3)
        d = self.decoder3(d, enc2)
        d = self.decoder2(d, enc1)
        return self.out(d)
