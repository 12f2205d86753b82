"""Convolution blocks shared by ASPP and decoder: plain or atrous depthwise-separable."""

from __future__ import annotations

from torch import nn


def set_dilation(conv: nn.Conv2d, rate: int) -> None:
    """Dilate a conv in place, keeping 'same' padding; no parameter changes."""
    k = conv.kernel_size[0]
    conv.dilation = (rate, rate)
    conv.padding = (rate * (k // 2), rate * (k // 2))


class ConvBNReLU(nn.Sequential):
    """k x k conv (atrous by `rate`) + BN + ReLU.

    With `separable=True` and k > 1 it is the paper's atrous separable convolution:
    depthwise k x k (dilated) + BN + ReLU, then pointwise 1x1 + BN + ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 rate: int = 1, separable: bool = False) -> None:
        pad = rate * (kernel_size // 2)
        if separable and kernel_size > 1:
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels, in_channels, kernel_size, padding=pad, dilation=rate,
                          groups=in_channels, bias=False),
                nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
            ]
        else:
            layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad,
                                dilation=rate, bias=False)]
        super().__init__(*layers, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    @property
    def spatial_conv(self) -> nn.Conv2d:
        """The conv that carries the kernel and the dilation."""
        return self[0]

    def set_rate(self, rate: int) -> None:
        set_dilation(self.spatial_conv, rate)
