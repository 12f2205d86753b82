"""The DeepLabV3+ network: backbones, ASPP, decoder.

`deeplab.core.choices.backbones` (backbone names, output strides) is plain data; the torch modules
below load on first use, so that reading the choices (params validation in the data stages)
does not import torch.
"""

from importlib import import_module
from typing import Any

from ..core.choices.backbones import (
    BACKBONE_ALIASES,
    BACKBONES,
    OUTPUT_STRIDES,
    canonical_backbone,
)

_LAZY = {"ASPP": ".aspp", "aspp_rates": ".aspp", "build_backbone": ".backbones",
         "DeepLabV3Plus": ".deeplab"}

__all__ = ["ASPP", "BACKBONES", "BACKBONE_ALIASES", "DeepLabV3Plus", "OUTPUT_STRIDES",
           "aspp_rates", "build_backbone", "canonical_backbone"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
