"""DeepLabV3+ decoder (Sec. 3.1 of the V3+ paper) and the DeepLabv3 head without it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBNReLU


class Decoder(nn.Module):
    """Upsample the encoder output to the stride-4 features, fuse, classify.

    Low-level features are reduced to `low_level_channels` (48 in the paper) by a 1x1
    conv, concatenated with the upsampled encoder output, refined by two 3x3 convs of
    `channels` filters, then classified by a 1x1 conv.
    """

    def __init__(self, low_in: int, high_in: int, num_classes: int, channels: int = 256,
                 low_level_channels: int = 48, separable: bool = False) -> None:
        super().__init__()
        self.reduce = ConvBNReLU(low_in, low_level_channels, 1)
        self.fuse = nn.Sequential(
            ConvBNReLU(high_in + low_level_channels, channels, 3, separable=separable),
            ConvBNReLU(channels, channels, 3, separable=separable))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([self.reduce(low), high], dim=1)))


class PlainHead(nn.Module):
    """DeepLabv3 (no decoder): a 1x1 classifier on the ASPP output."""

    def __init__(self, high_in: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(high_in, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.classifier(high)
