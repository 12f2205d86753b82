"""Inference strategies of the paper's Table 5 (output stride, multi-scale inputs, flip) and
the evaluation geometry of the reference.

The network resizes with `align_corners=True`, which maps features exactly only for input
sizes of the form k * output_stride + 1. As the reference (513 x 513), every view is padded
at the bottom and right with the mean pixel to such a size (the smallest one that holds it,
or `pad_to`), run, and its logits cropped back. Multi-scale inputs are resized as in
training (bilinear, half-pixel centres, antialiased when shrinking) and their
probabilities resized back the same way before averaging.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class InferenceStrategy:
    """How a network runs on full images: the paper's Table 5 columns (eval output stride,
    multi-scale inputs, left-right flip) and the padding size. `output_stride` None keeps the
    model's own; `pad_to` None pads to the smallest k * output_stride + 1."""

    output_stride: int | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    pad_to: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "flip", bool(self.flip))

    @property
    def multi_scale(self) -> bool:
        return len(self.scales) > 1

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "InferenceStrategy":
        return cls(**{k: values[k] for k in ("output_stride", "scales", "flip", "pad_to")
                      if k in values})

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scales": list(self.scales)}

    def with_overrides(self, **changes: Any) -> "InferenceStrategy":
        """This strategy with the given fields replaced (None leaves a field as it is)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def padded_size(size: int, output_stride: int, pad_to: int | None = None) -> int:
    """`pad_to` if it holds `size`, else the smallest `k * output_stride + 1 >= size`."""
    if pad_to is not None and pad_to >= size:
        return pad_to
    return size + (1 - size) % output_stride  # size + a provably non-negative amount (export)


def run_padded(model: nn.Module, image: torch.Tensor, pad_to: int | None = None) -> torch.Tensor:
    """Logits of `model` for `image` padded with its mean pixel to an exact size, cropped back."""
    h, w = image.shape[-2:]
    os_ = model.output_stride
    pads = (0, padded_size(w, os_, pad_to) - w, 0, padded_size(h, os_, pad_to) - h)
    # Zero padding plus the mean where padded: image pixels stay exact, and no branch on the
    # padding amount (torch.export keeps height and width dynamic).
    outside = F.pad(torch.zeros_like(image[:, :1]), pads, value=1.0)
    x = F.pad(image, pads) + outside * model.mean.to(image.dtype)
    return F.pad(model(x), tuple(-p for p in pads))  # crop back (a fresh tensor: no shape guard)


@torch.no_grad()
def predict_probs(model: nn.Module, image: torch.Tensor,
                  strategy: InferenceStrategy = InferenceStrategy()) -> torch.Tensor:
    """Class probabilities `N x C x H x W` for a float [0, 1] batch at its full size.

    Each scale resizes the input, the logits are resized back to the input size, and the
    softmax probabilities of all scales (and their left-right flips) are averaged. The
    model runs at its current output stride (`set_output_stride` applies a strategy's).
    """
    scales, flip, pad_to = strategy.scales, strategy.flip, strategy.pad_to
    h, w = image.shape[-2:]
    total = None
    count = 0
    for s in scales:
        x = image if s == 1.0 else TF.resize(image, [max(1, round(h * s)), max(1, round(w * s))],
                                             antialias=True)
        views = [x, x.flip(-1)] if flip else [x]
        for k, v in enumerate(views):
            logits = run_padded(model, v, pad_to).float()
            if k == 1:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            probs = logits.softmax(1)
            total = probs if total is None else total + probs
            count += 1
    return total / count


def to_float_image(batch: torch.Tensor) -> torch.Tensor:
    """uint8 `N x 3 x H x W` -> float [0, 1]."""
    return batch.float().div_(255)


class ModelRunner:
    """A network under an inference strategy, with the deployed runtimes' interface: uint8
    `N x H x W x 3` images in, class probabilities (`probs`) or labels (`labels`) out."""

    def __init__(self, model: nn.Module, strategy: InferenceStrategy = InferenceStrategy(),
                 device: torch.device | str = "cpu") -> None:
        self.model, self.strategy, self.device = model.eval(), strategy, torch.device(device)

    def _probs(self, images: Any) -> torch.Tensor:
        batch = torch.from_numpy(images).permute(0, 3, 1, 2)
        return predict_probs(self.model, to_float_image(batch).to(self.device), self.strategy)

    def probs(self, images: Any) -> Any:
        return self._probs(images).cpu().numpy()

    def labels(self, images: Any) -> Any:
        return self._probs(images).argmax(1).to(torch.uint8).cpu().numpy()
