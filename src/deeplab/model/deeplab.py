"""DeepLabV3+ = atrous backbone + ASPP + decoder (arXiv 1802.02611)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.choices.backbones import canonical_backbone
from .aspp import ASPP, aspp_rates
from .backbones import build_backbone
from .decoder import Decoder, PlainHead


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ for semantic segmentation.

    Input: `N x 3 x H x W` RGB in [0, 1]; the normalisation the backbone's weights expect
    (ImageNet mean/std for torchvision's ResNet and MobileNetV2, mean = std = 0.5 for the
    DeepLab authors' Xception-65) happens inside, so the preprocessing travels with the
    weights. Output: `N x num_classes x H x W` logits at the input size, for any H and W.
    `bn_momentum` is PyTorch's (1 - the reference's BN decay: 0.9997 -> 0.0003).
    """

    def __init__(self, num_classes: int = 21, backbone: str = "resnet101", output_stride: int = 16,
                 decoder: bool = True, separable: bool = True,
                 pretrained_backbone: bool | str | None = False,
                 multi_grid: Sequence[int] | None = (1, 2, 4), aspp_channels: int = 256,
                 decoder_channels: int = 256, low_level_channels: int = 48,
                 dropout: float = 0.1, bn_momentum: float = 0.1) -> None:
        super().__init__()
        pretrained = "imagenet" if pretrained_backbone is True else (pretrained_backbone or None)
        backbone = canonical_backbone(backbone)
        self.config: dict[str, Any] = dict(
            num_classes=num_classes, backbone=backbone, output_stride=output_stride,
            decoder=decoder, separable=separable,
            multi_grid=list(multi_grid) if multi_grid else None,
            aspp_channels=aspp_channels, decoder_channels=decoder_channels,
            low_level_channels=low_level_channels, dropout=dropout, bn_momentum=bn_momentum)
        self.num_classes = num_classes
        self.backbone = build_backbone(backbone, output_stride, multi_grid, pretrained)
        self.register_buffer("mean", torch.tensor(self.backbone.mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(self.backbone.std).view(1, 3, 1, 1),
                             persistent=False)
        self.aspp = ASPP(self.backbone.high_channels, aspp_channels, aspp_rates(output_stride),
                         separable=separable, dropout=dropout)
        if decoder:
            self.head: nn.Module = Decoder(self.backbone.low_channels, aspp_channels, num_classes,
                                           decoder_channels, low_level_channels, separable)
        else:
            self.head = PlainHead(aspp_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = bn_momentum

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def set_output_stride(self, output_stride: int) -> None:
        """Evaluate (or train) at another output stride: new dilations and ASPP rates, same weights."""
        self.backbone.set_output_stride(output_stride)
        self.aspp.set_rates(aspp_rates(output_stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        low, high = self.backbone((x - self.mean) / self.std)
        logits = self.head(low, self.aspp(high))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def load_weights(self, state: Mapping[str, torch.Tensor], *, reinit_classifier: bool = False,
                     source: str = "checkpoint") -> list[str]:
        """Load a DeepLabV3+ state dict of the same architecture.

        A checkpoint with another number of classes is an error unless `reinit_classifier`
        is set: then the classifier keeps its fresh initialisation and the names of the
        re-initialised tensors are returned.
        """
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            example = (missing or unexpected)[0]
            raise ValueError(f"{source}: not this architecture ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected keys, e.g. {example}); "
                             f"model config: {self.config}")
        skipped = []
        for key in own:
            if own[key].shape == state[key].shape:
                continue
            if key.startswith("head.classifier.") and reinit_classifier:
                skipped.append(key)
                continue
            if key.startswith("head.classifier."):
                raise ValueError(
                    f"{source}: trained for {state[key].shape[0]} classes, the model has "
                    f"{own[key].shape[0]}; re-initialise the classifier to fine-tune on "
                    f"another label set (reinit_classifier=True)")
            raise ValueError(f"{source}: shape of {key} is {tuple(state[key].shape)}, "
                             f"the model expects {tuple(own[key].shape)}")
        self.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
        return skipped

    def load_matching_weights(self, state: Mapping[str, torch.Tensor]) -> list[str]:
        """Load the tensors of `state` whose names and shapes match this model's (a checkpoint
        of another head or conv type); return the names that keep their initialisation."""
        own = self.state_dict()
        matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(matching, strict=False)
        return sorted(set(own) - set(matching))
