"""Atrous Spatial Pyramid Pooling with image-level features (DeepLabv3, Sec. 3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBNReLU

BASE_RATES = (6, 12, 18)  # at output stride 16


def aspp_rates(output_stride: int, base: tuple[int, ...] = BASE_RATES) -> tuple[int, ...]:
    """ASPP rates for an output stride: (6, 12, 18) at 16, (12, 24, 36) at 8, (3, 6, 9) at 32."""
    return tuple(max(1, r * 16 // output_stride) for r in base)


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv + BN + ReLU -> bilinear upsample.

    At batch size 1 in training mode the pooled map has one value per channel, where
    BN cannot compute batch statistics; the branch then normalises with its running
    statistics (and does not update them) instead of crashing.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.conv(x.mean(dim=(2, 3), keepdim=True))
        if self.training and y.shape[0] == 1:
            y = F.batch_norm(y, self.bn.running_mean, self.bn.running_var, self.bn.weight,
                             self.bn.bias, training=False, eps=self.bn.eps)
        else:
            y = self.bn(y)
        y = F.relu(y, inplace=True)
        return F.interpolate(y, size=size, mode="bilinear", align_corners=True)


class ASPP(nn.Module):
    """1x1 branch + three 3x3 atrous branches + image pooling, concatenated and projected."""

    def __init__(self, in_channels: int, channels: int = 256, rates: tuple[int, ...] = BASE_RATES,
                 separable: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, channels, 1)]
            + [ConvBNReLU(in_channels, channels, 3, rate=r, separable=separable) for r in rates])
        self.pooling = ImagePooling(in_channels, channels)
        self.project = nn.Sequential(ConvBNReLU((len(rates) + 2) * channels, channels, 1),
                                     nn.Dropout(dropout))

    @property
    def rates(self) -> tuple[int, ...]:
        return tuple(b.spatial_conv.dilation[0] for b in self.branches[1:])

    def set_rates(self, rates: tuple[int, ...]) -> None:
        if len(rates) != len(self.branches) - 1:
            raise ValueError(f"ASPP has {len(self.branches) - 1} atrous branches, got rates {rates}")
        for branch, rate in zip(self.branches[1:], rates):
            branch.set_rate(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [b(x) for b in self.branches] + [self.pooling(x)]
        return self.project(torch.cat(feats, dim=1))
