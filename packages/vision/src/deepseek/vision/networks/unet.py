"""U-Net (Ronneberger et al., 2015) and U-Net++ (Zhou et al., 2018), 2-D and 3-D.

Constructors follow MONAI (``spatial_dims``, ``in_channels``, ``out_channels``,
``features``); ``features[i]`` is the number of channels at resolution level ``i`` and
``len(features) - 1`` is the number of 2x downsamplings, so every spatial size of the input
must be divisible by ``2 ** (len(features) - 1)``.

The convolution blocks sit in ``nn.ModuleList`` stacks of one block class each, which
``deepseek.nn.apply_activation_checkpointing(model)`` detects and wraps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepseek.vision.networks.blocks import (
    ConvBlock,
    as_features,
    check_channels,
    check_input,
    check_spatial_dims,
    conv,
    conv_transpose,
)

__all__ = ["UNet", "UNetPlusPlus", "UpBlock", "convert_monai_basic_unet_state_dict"]


class UpBlock(nn.Module):
    """2x transposed-conv upsampling of ``below``, concatenated with ``skips``, then a ConvBlock."""

    def __init__(
        self,
        spatial_dims: int,
        below_channels: int,
        skip_channels: int,
        out_channels: int,
        norm: str,
        act: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.up = conv_transpose(spatial_dims)(below_channels, out_channels, 2, stride=2)
        self.conv = ConvBlock(
            spatial_dims, skip_channels + out_channels, out_channels, norm, act, dropout
        )

    def forward(self, below: torch.Tensor, *skips: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([*skips, self.up(below)], dim=1))


class UNet(nn.Module):
    """U-Net for 2-D or 3-D segmentation; returns logits ``(N, out_channels, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: input channels and classes.
        features: channels per resolution level (level 0 is full resolution).
        norm: ``"instance"`` (default), ``"batch"``, ``"group"`` or ``"none"``.
        act: ``"leakyrelu"`` (default), ``"relu"``, ``"prelu"`` or ``"gelu"``.
        dropout: dropout probability inside each block.

    >>> import torch
    >>> net = UNet(spatial_dims=3, in_channels=1, out_channels=2, features=(8, 16, 32))
    >>> net(torch.randn(1, 1, 16, 16, 16)).shape
    torch.Size([1, 2, 16, 16, 16])
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        norm: str = "instance",
        act: str = "leakyrelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_channels("in_channels", in_channels)
        self.out_channels = check_channels("out_channels", out_channels)
        self.features = as_features(features)
        f = self.features
        self.divisor = 2 ** (len(f) - 1)
        self.encoder = nn.ModuleList(
            ConvBlock(spatial_dims, c_in, c_out, norm, act, dropout)
            for c_in, c_out in zip((in_channels, *f[:-1]), f)
        )
        self.decoder = nn.ModuleList(
            UpBlock(spatial_dims, f[i + 1], f[i], f[i], norm, act, dropout)
            for i in reversed(range(len(f) - 1))
        )
        self.head = conv(spatial_dims)(f[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.spatial_dims, self.in_channels, self.divisor)
        pool = F.max_pool3d if self.spatial_dims == 3 else F.max_pool2d
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else pool(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)


class UNetPlusPlus(nn.Module):
    """U-Net++: nested, densely connected skip pathways, optional deep supervision.

    Node ``X[i][j]`` (level ``i``, column ``j``) sees every earlier node of its level and the
    upsampled ``X[i+1][j-1]``. With ``deep_supervision=True`` the network has one 1x1 head
    on each ``X[0][j]`` and, in training mode, returns the list of all heads, final (deepest
    column) first, as MONAI's ``BasicUNetPlusPlus`` does; in eval mode it returns the final
    head only. Wrap the loss in ``losses.DeepSupervisionLoss`` to score the list.

    >>> import torch
    >>> net = UNetPlusPlus(spatial_dims=3, in_channels=1, out_channels=2,
    ...                    features=(4, 8, 16), deep_supervision=True)
    >>> [h.shape[1] for h in net(torch.randn(1, 1, 16, 16, 16))]
    [2, 2]
    >>> net.eval()(torch.randn(1, 1, 16, 16, 16)).shape
    torch.Size([1, 2, 16, 16, 16])
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        deep_supervision: bool = False,
        norm: str = "instance",
        act: str = "leakyrelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_channels("in_channels", in_channels)
        self.out_channels = check_channels("out_channels", out_channels)
        self.features = as_features(features)
        self.deep_supervision = bool(deep_supervision)
        f = self.features
        depth = len(f) - 1
        self.divisor = 2**depth
        self.encoder = nn.ModuleList(
            ConvBlock(spatial_dims, c_in, c_out, norm, act, dropout)
            for c_in, c_out in zip((in_channels, *f[:-1]), f)
        )
        # Nested nodes in the order they are computed: column j = 1..depth, level i = 0..depth-j.
        self.order = [(i, j) for j in range(1, depth + 1) for i in range(depth - j + 1)]
        self.nested = nn.ModuleList(
            UpBlock(spatial_dims, f[i + 1], j * f[i], f[i], norm, act, dropout)
            for i, j in self.order
        )
        n_heads = depth if self.deep_supervision else 1
        self.heads = nn.ModuleList(
            conv(spatial_dims)(f[0], out_channels, 1) for _ in range(n_heads)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input(type(self).__name__, x, self.spatial_dims, self.in_channels, self.divisor)
        pool = F.max_pool3d if self.spatial_dims == 3 else F.max_pool2d
        nodes: list[list[torch.Tensor]] = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else pool(x, 2))
            nodes.append([x])
        for (i, _), block in zip(self.order, self.nested):
            nodes[i].append(block(nodes[i + 1][-1], *nodes[i]))
        top = nodes[0]
        if not self.deep_supervision:
            return self.heads[0](top[-1])
        if not self.training:
            return self.heads[-1](top[-1])
        # heads[j-1] reads X[0][j]; returned final first.
        return [self.heads[j - 1](top[j]) for j in range(len(top) - 1, 0, -1)]


def convert_monai_basic_unet_state_dict(
    state_dict: dict[str, torch.Tensor], model: UNet
) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` from a ``monai.networks.nets.BasicUNet`` one.

    ``UNet(features=(f, f, 2f, 4f, 8f))`` has the layers of ``BasicUNet(features=(f, f, 2f,
    4f, 8f, f))`` (MONAI's default with ``f = 32``; instance norm, LeakyReLU 0.1). MONAI's
    conv biases in front of instance norm are dropped: the norm subtracts the per-channel
    mean, so they never change the output. Tensors are matched in order, shapes checked.

    >>> import torch
    >>> net = UNet(3, 1, 2, features=(4, 4, 8))
    >>> convert_monai_basic_unet_state_dict({}, net)
    Traceback (most recent call last):
    ...
    ValueError: BasicUNet state dict has 0 tensors (after dropping conv biases) but UNet has 36
    """
    theirs = [(k, v) for k, v in state_dict.items() if not k.endswith(".conv.bias")]
    mine = model.state_dict()
    if len(theirs) != len(mine):
        raise ValueError(
            f"BasicUNet state dict has {len(theirs)} tensors (after dropping conv biases) but "
            f"{type(model).__name__} has {len(mine)}"
        )
    out = {}
    for (key, value), (their_key, source) in zip(mine.items(), theirs):
        if value.shape != source.shape:
            raise ValueError(
                f"{key} {tuple(value.shape)} does not fit MONAI's {their_key} "
                f"{tuple(source.shape)}; use features=(f, f, 2f, 4f, 8f) for "
                "BasicUNet(features=(f, f, 2f, 4f, 8f, f))"
            )
        out[key] = source
    return out
