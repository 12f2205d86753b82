"""Any timm encoder as a DeepLabV3+ backbone (`model.backbone: timm:<name>`).

The encoder is `timm.create_model(name, features_only=True, output_stride=OS,
out_indices=(low, high))`, as smp's `tu-` encoders build it: timm dilates its own stages, so
every family that timm can dilate (ResNet/ResNeSt, EfficientNet, MobileNetV3, RegNet,
ConvNeXt, ...) works without a wrapper of ours. The low-level tap is timm's stride-4 feature,
the high-level tap its last one (at the output stride). A network that has no stride-4
feature, or that cannot reach the output stride, is refused in one line naming it.

`set_output_stride` keeps the parameters (an optimizer or a device move still holds them):
it builds the same network at the new output stride and takes over its strides, dilations
and paddings, module by module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.choices.backbones import TIMM_PREFIX, check_output_stride

# Module attributes that belong to the model, not to the geometry: kept on a rebuild.
_KEEP = {"training", "momentum"}
_PLAIN = (bool, int, float, str, tuple, type(None))
PROBE = 64  # side of the input that checks the taps' strides at construction


class TimmBackbone(nn.Module):
    """`(low, high)` features of a timm encoder: stride 4 and the output stride."""

    def __init__(self, name: str, output_stride: int = 16,
                 pretrained: str | Path | None = None) -> None:
        super().__init__()
        self.name = name
        self.encoder = _create(name, output_stride, pretrained)
        self.low_channels, self.high_channels = self.encoder.feature_info.channels()
        cfg = self.encoder.pretrained_cfg
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.output_stride = output_stride
        _check_strides(self.encoder, name, output_stride)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.encoder(x)
        return low, high

    def set_output_stride(self, output_stride: int) -> None:
        """The geometry of timm's own network at `output_stride`; parameters unchanged."""
        check_output_stride(output_stride)
        if output_stride == self.output_stride:
            return
        target = _create(self.name, output_stride, None)
        _take_geometry(self.encoder, target, self._device())
        self.output_stride = output_stride

    def _device(self) -> torch.device:
        tensor = next(self.encoder.parameters(), None)
        return tensor.device if tensor is not None else torch.device("cpu")


def _arch(name: str) -> str:
    return name.removeprefix(TIMM_PREFIX)


def _create(name: str, output_stride: int, pretrained: str | Path | None) -> nn.Module:
    """timm's features-only network with the stride-4 and last taps; one-line errors."""
    import timm

    arch = _arch(name)
    kwargs: dict[str, Any] = dict(features_only=True, output_stride=output_stride)
    try:
        with torch.device("meta"):
            probe = timm.create_model(arch, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError, NotImplementedError, RuntimeError) as exc:
        raise ValueError(f"backbone {name}: timm cannot build it as a feature encoder at output "
                         f"stride {output_stride} ({_first_line(exc)})") from None
    reductions = probe.feature_info.reduction()
    if 4 not in reductions:
        raise ValueError(f"backbone {name}: timm's features have strides {reductions}, none at 4 "
                         f"for the decoder's low-level input (a patch-embedding network such as a "
                         f"ViT has none)")
    kwargs["out_indices"] = (reductions.index(4), len(reductions) - 1)
    if pretrained is None:
        return timm.create_model(arch, pretrained=False, **kwargs)
    if str(pretrained) == "imagenet":
        try:
            return timm.create_model(arch, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - offline, no weights for the tag, hub errors
            raise ValueError(
                f"backbone {name}: timm could not get its ImageNet weights "
                f"({type(exc).__name__}: {_first_line(exc)}); on a machine with the internet run "
                f"`torch.save(timm.create_model('{arch}', pretrained=True).state_dict(), "
                f"'{arch}.pth')` and set model.pretrained_backbone to that file") from None
    from .backbones import read_state_dict

    state = read_state_dict(Path(pretrained))
    try:
        return timm.create_model(arch, pretrained=True,
                                 pretrained_cfg_overlay={"state_dict": state}, **kwargs)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ValueError(f"{pretrained}: does not match timm's {arch} "
                         f"({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _check_strides(encoder: nn.Module, name: str, output_stride: int) -> None:
    """The taps are at strides 4 and `output_stride` (a network that ignores timm's
    `output_stride` is refused here)."""
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        low, high = encoder(torch.zeros(1, 3, PROBE, PROBE, device=_first_device(encoder)))
    encoder.train(was)
    got = (PROBE // low.shape[-1], PROBE // high.shape[-1])
    if got != (4, output_stride):
        raise ValueError(f"backbone {name}: its features come at strides {got[0]} and {got[1]}, "
                         f"not 4 and {output_stride} (timm cannot dilate it to output stride "
                         f"{output_stride})")


def _first_device(module: nn.Module) -> torch.device:
    tensor = next(module.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _take_geometry(model: nn.Module, target: nn.Module, device: torch.device) -> None:
    """Give `model` the strides, dilations and paddings of `target`, the same network built at
    another output stride: plain attributes are copied module by module. A module of another
    type there takes that type where it holds the same tensors (timm's `Conv2dSame`, whose
    padding depends on the stride, for a `Conv2d`); a tensor-free one is replaced, added or
    removed (the avg-pool shortcut that becomes an identity, ResNeSt's strided pool)."""
    wanted = dict(target.named_modules())
    for name in [n for n, _ in model.named_modules() if n and n not in wanted]:
        parent, _, child = name.rpartition(".")
        own = dict(model.named_modules())
        if name in own and _tensors(own[name], recurse=True):
            raise RuntimeError(f"{name}: holds tensors but is not in the network built at the "
                               f"other output stride")
        if name in own:
            holder = own[parent] if parent else model
            delattr(holder, child)
            if hasattr(wanted[parent], child):  # e.g. a plain `None` in timm's block
                setattr(holder, child, getattr(wanted[parent], child))
    for name, new in wanted.items():
        own = dict(model.named_modules())
        old = own.get(name)
        if old is None or (type(old) is not type(new) and not _tensors(old, recurse=True)
                           and not _tensors(new, recurse=True)):
            if _tensors(new, recurse=True) or (old is not None and _tensors(old, recurse=True)):
                raise RuntimeError(f"{name}: holds tensors, not in this network")
            parent, _, child = name.rpartition(".")
            setattr(own[parent] if parent else model, child, new.to(device))
            continue
        if type(old) is not type(new):
            if _tensors(new) != _tensors(old) or any(True for _ in new.children()):
                raise RuntimeError(f"{name}: {type(old).__name__} becomes {type(new).__name__}")
            old.__class__ = type(new)
        for key, value in vars(new).items():
            if key.startswith("_") and key != "_reversed_padding_repeated_twice":
                continue
            if key not in _KEEP and isinstance(value, _PLAIN):
                setattr(old, key, value)
    for name, module in model.named_modules():  # the children in the target's order
        order = list(wanted[name]._modules) if name in wanted else []
        if order and set(order) == set(module._modules):
            module._modules = type(module._modules)((k, module._modules[k]) for k in order)


def _tensors(module: nn.Module, recurse: bool = False) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a module's parameters and buffers."""
    return {k: tuple(v.shape) for k, v in
            [*module.named_parameters(recurse=recurse), *module.named_buffers(recurse=recurse)]}
