"""Backbones with atrous output stride: ResNet-50/101, aligned Xception-65, MobileNetV2.

Each backbone returns `(low, high)`: stride-4 low-level features for the decoder and the
encoder features at the configured output stride. The library networks (torchvision,
timm) are built at their native stride 32; `set_output_stride` then removes the stride of
the last stages and dilates their 3x3 convolutions in place, so the same parameters serve
every output stride.

Atrous convention (the DeepLab reference's `stack_blocks_dense`, timm's
`XceptionAligned(output_stride=...)`, torchvision's `replace_stride_with_dilation`): in a
stage that loses its stride, the unit that carried the stride runs at stride 1 with the
*previous* rate; only the units after it get the doubled rate. This keeps the atrous network
equivalent to the strided one that the ImageNet weights were trained as. With multi-grid
(ResNet), the last stage's units run at `rate * grid[u]` instead (the paper's (2, 4, 8) at
output stride 16 for grid (1, 2, 4)), as mmsegmentation's `multi_grid` does.

Each backbone also carries the input normalisation its weights expect (`mean`, `std` for RGB
in [0, 1]), read from the weights' own config.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torchvision
from torch import nn

from ..core.choices.backbones import TIMM_PREFIX, canonical_backbone, check_output_stride
from .layers import set_dilation


class Backbone(nn.Module):
    """Common part: a stride-4 `stem`, then `stages` that each halve the resolution."""

    low_channels: int
    high_channels: int
    stem_stride = 4

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module],
                 multi_grid: Sequence[int] | None = None,
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225)) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.multi_grid = tuple(multi_grid) if multi_grid else None
        self.mean, self.std = tuple(mean), tuple(std)
        # Convs that carry stride 2 at the native output stride (3x3 and 1x1 shortcuts).
        self._strided = [[m for m in s.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
                         for s in self.stages]
        if any(not convs for convs in self._strided):
            raise RuntimeError(f"{type(self).__name__}: every stage must start with a stride-2 conv")
        self.output_stride = self.stem_stride * 2 ** len(self.stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.stem(x)
        high = low
        for stage in self.stages:
            high = stage(high)
        return low, high

    def units(self, stage: int) -> list[nn.Module]:
        """The residual units of a stage (multi-grid assigns one rate per unit)."""
        return list(self.stages[stage].children())

    def set_output_stride(self, output_stride: int) -> None:
        """Stride 1 + dilation for the stages past `output_stride`; parameters unchanged."""
        native = self.stem_stride * 2 ** len(self.stages)
        check_output_stride(output_stride)
        if output_stride > native:
            raise ValueError(f"output_stride {output_stride} exceeds the network's native {native}")
        stride, rate = self.stem_stride, 1
        last = len(self.stages) - 1
        for i in range(len(self.stages)):
            previous = rate
            if stride < output_stride:
                stride *= 2
                step = 2
            else:
                rate *= 2
                step = 1
            for conv in self._strided[i]:
                conv.stride = (step, step)
            grid = self.multi_grid if i == last else None
            for u, unit in enumerate(self.units(i)):
                if grid:
                    unit_rate = rate * grid[u % len(grid)]
                else:  # the unit that carried the stride keeps the previous rate
                    unit_rate = previous if u == 0 else rate
                for m in unit.modules():
                    if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1:
                        set_dilation(m, unit_rate)
        self.output_stride = output_stride

    def dilations(self) -> list[list[int]]:
        """Dilation of every 3x3 conv, per stage (for inspection and tests)."""
        return [[m.dilation[0] for m in s.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
                for s in self.stages]


class ResNetBackbone(Backbone):
    """torchvision ResNet; low-level features = layer1 output (stride 4, 256 channels)."""

    low_channels, high_channels = 256, 2048

    def __init__(self, net: torchvision.models.ResNet, multi_grid: Sequence[int] | None,
                 **norm: Sequence[float]) -> None:
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        super().__init__(stem, [net.layer2, net.layer3, net.layer4], multi_grid, **norm)


class MobileNetV2Backbone(Backbone):
    """torchvision MobileNetV2; low = features[3] (stride 4, 24 ch), high = features[17] (320 ch)."""

    low_channels, high_channels = 24, 320

    def __init__(self, net: torchvision.models.MobileNetV2, **norm: Sequence[float]) -> None:
        f = net.features
        super().__init__(f[:4], [f[4:7], f[7:14], f[14:18]], **norm)


class XceptionBackbone(Backbone):
    """timm's modified aligned Xception-65, read through timm's feature API.

    Stages start at the strided blocks timm lists (`feature_ends`); the features are timm's
    `forward_intermediates` taps: low-level = the stride-4 tap inside entry block 2, before
    its strided separable conv (256 channels, the DeepLab decoder's input), high = the last
    block's output.
    """

    low_channels, high_channels = 256, 2048

    def __init__(self, net: nn.Module, **norm: Sequence[float]) -> None:
        blocks, ends = list(net.blocks.children()), net.feature_ends
        stem = nn.Sequential(net.stem, *blocks[:ends[1]])
        super().__init__(stem, [blocks[ends[1]], nn.Sequential(*blocks[ends[2]:ends[3]]),
                                nn.Sequential(*blocks[ends[3]:])], **norm)
        low = next(i for i, f in enumerate(net.feature_info) if f["reduction"] == 4)
        # A bound method, not a submodule: its modules are registered above (stem, stages).
        self._features = functools.partial(net.forward_intermediates,
                                           indices=[low, len(net.feature_info) - 1],
                                           intermediates_only=True)

    def units(self, stage: int) -> list[nn.Module]:
        return [self.stages[stage]] if stage == 0 else super().units(stage)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self._features(x)
        return low, high


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A weights file's state dict (also inside a `state_dict` or `model` key); one-line errors."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained backbone file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable PyTorch weights file ({exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


def load_library_weights(net: nn.Module, path: str | Path, ignore_prefixes: tuple[str, ...]) -> None:
    """Load a local file of the library network's ImageNet weights (classifier keys ignored)."""
    path = Path(path)
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(ignore_prefixes)}
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(ignore_prefixes)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} keys (e.g. {keys[0]})")
        raise ValueError(f"{path}: does not match the {type(net).__name__} backbone: " + "; ".join(parts))
    net.load_state_dict(state, strict=False)


def _torchvision_norm(weights: torchvision.models.WeightsEnum) -> dict[str, tuple[float, ...]]:
    """mean/std of a torchvision weights entry's own preprocessing (no download)."""
    preprocess = weights.transforms()
    return {"mean": tuple(preprocess.mean), "std": tuple(preprocess.std)}


Norm = dict[str, tuple[float, ...]]


def _resnet(depth: int) -> Callable[[bool], tuple[nn.Module, Norm]]:
    def library(online: bool) -> tuple[nn.Module, Norm]:
        weights = getattr(torchvision.models, f"ResNet{depth}_Weights").IMAGENET1K_V2
        net = getattr(torchvision.models, f"resnet{depth}")(weights=weights if online else None)
        return net, _torchvision_norm(weights)
    return library


def _mobilenet_v2(online: bool) -> tuple[nn.Module, Norm]:
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2
    return torchvision.models.mobilenet_v2(weights=weights if online else None), \
        _torchvision_norm(weights)


def _xception65(online: bool) -> tuple[nn.Module, Norm]:
    import timm  # the well-kept port of the DeepLab authors' aligned Xception

    # tf_in1k: the DeepLab authors' ImageNet weights (inputs in [-1, 1]), ported by timm
    net = timm.create_model("xception65.tf_in1k", pretrained=online, num_classes=0)
    cfg = net.pretrained_cfg
    return net, {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: the library network (and its weights' normalisation), the prefix of its
    classifier keys (left out of weights files), and the wrapper that taps its features."""

    library: Callable[[bool], tuple[nn.Module, Norm]]  # online ImageNet weights or not
    classifier: str
    wrap: Callable[..., Backbone]  # (net, multi_grid, **norm)
    multi_grid: bool = False  # whether `multi_grid` applies


BACKBONE_SPECS: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(_resnet(50), "fc.", ResNetBackbone, multi_grid=True),
    "resnet101": BackboneSpec(_resnet(101), "fc.", ResNetBackbone, multi_grid=True),
    "xception65": BackboneSpec(_xception65, "head.", XceptionBackbone),
    "mobilenet_v2": BackboneSpec(_mobilenet_v2, "classifier.", MobileNetV2Backbone),
}


def backbone_spec(name: str) -> BackboneSpec:
    """The table entry of `name` (or its alias); ValueError naming the choices otherwise."""
    name = canonical_backbone(name)
    if name not in BACKBONE_SPECS:  # a name in core.choices.backbones without an entry here
        raise ValueError(f"backbone {name!r} has no entry in deeplab.model.backbones.BACKBONE_SPECS")
    return BACKBONE_SPECS[name]


def build_backbone(name: str, output_stride: int = 16, multi_grid: Sequence[int] | None = (1, 2, 4),
                   pretrained: str | None = None) -> nn.Module:
    """Build a backbone at `output_stride`.

    `pretrained`: None (random init), "imagenet" (the library's own weight API; needs the
    internet or a warm cache) or the path of a local weights file in the library's format.
    `multi_grid` applies to ResNet only (None: the plain atrous convention, as torchvision).
    `timm:<name>`: any timm encoder (`timm_encoder.TimmBackbone`).
    The input normalisation is the one of the library's ImageNet weights for that backbone,
    also with random initialisation, so a model keeps one convention whatever its init.
    """
    if canonical_backbone(name).startswith(TIMM_PREFIX):
        from .timm_encoder import TimmBackbone

        return TimmBackbone(name, output_stride, pretrained)
    spec = backbone_spec(name)
    online = pretrained == "imagenet"
    net, norm = spec.library(online)
    if pretrained is not None and not online:
        load_library_weights(net, pretrained, (spec.classifier,))
    backbone = spec.wrap(net, multi_grid, **norm) if spec.multi_grid else spec.wrap(net, **norm)
    backbone.set_output_stride(output_stride)
    return backbone
