"""Building blocks shared by the segmentation networks (2-D and 3-D)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NORMS = ("instance", "batch", "group", "none")
ACTS = ("leakyrelu", "relu", "prelu", "gelu")


def check_spatial_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def check_channels(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv3d if spatial_dims == 3 else nn.Conv2d


def conv_transpose(spatial_dims: int) -> type[nn.Module]:
    return nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d


def norm_layer(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    if norm == "instance":
        cls = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        return cls(channels, affine=True)
    if norm == "batch":
        return (nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d)(channels)
    if norm == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def act_layer(act: str) -> nn.Module:
    if act == "leakyrelu":
        return nn.LeakyReLU(0.1)
    if act == "relu":
        return nn.ReLU()
    if act == "prelu":
        return nn.PReLU()
    if act == "gelu":
        return nn.GELU()
    raise ValueError(f"act must be one of {ACTS}, got {act!r}")


class ConvBlock(nn.Sequential):
    """Two ``conv 3 -> norm -> act`` layers (the U-Net's "double conv"), dropout between."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: str = "instance",
        act: str = "leakyrelu",
        dropout: float = 0.0,
    ) -> None:
        Conv = conv(spatial_dims)
        bias = norm == "none"
        layers: list[nn.Module] = [
            Conv(in_channels, out_channels, 3, padding=1, bias=bias),
            norm_layer(norm, spatial_dims, out_channels),
            act_layer(act),
        ]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [
            Conv(out_channels, out_channels, 3, padding=1, bias=bias),
            norm_layer(norm, spatial_dims, out_channels),
            act_layer(act),
        ]
        super().__init__(*layers)


def check_input(
    model: str, x: torch.Tensor, spatial_dims: int, in_channels: int, divisor: int = 1
) -> None:
    """One clear error for an input the network cannot take (shape checks only: no sync)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} expects a tensor, got {type(x).__name__}")
    if x.dim() != spatial_dims + 2:
        layout = "(N, C, D, H, W)" if spatial_dims == 3 else "(N, C, H, W)"
        raise ValueError(
            f"{model}(spatial_dims={spatial_dims}) expects input of shape {layout}, "
            f"got {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model} was built with in_channels={in_channels} but the input has "
            f"{x.shape[1]} channels (shape {tuple(x.shape)})"
        )
    bad = [s for s in x.shape[2:] if s % divisor]
    if bad:
        raise ValueError(
            f"{model}: every spatial size must be divisible by {divisor} (2 ** number of "
            f"downsamplings), got spatial shape {tuple(x.shape[2:])}; pad or crop the input "
            f"(e.g. to {tuple(-(-s // divisor) * divisor for s in x.shape[2:])})"
        )


def as_features(features: Sequence[int], minimum: int = 2) -> tuple[int, ...]:
    feats = tuple(features)
    if len(feats) < minimum or not all(
        isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in feats
    ):
        raise ValueError(
            f"features must be a sequence of at least {minimum} positive ints (channels per "
            f"level), got {features!r}"
        )
    return feats
