"""The DeepLabV3+ network: backbones, ASPP, decoder."""

from .aspp import ASPP, aspp_rates
from .backbones import BACKBONES, build_backbone
from .deeplab import DeepLabV3Plus

__all__ = ["ASPP", "BACKBONES", "DeepLabV3Plus", "aspp_rates", "build_backbone"]
