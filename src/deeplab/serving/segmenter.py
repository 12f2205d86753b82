"""The deployable model: RGB uint8 images in, label maps out, preprocessing included.

`Segmenter` wraps a `DeepLabV3Plus` with its inference strategy (output stride, scales,
flip) and the evaluation geometry (`inference.predict_probs`). It is what the registered
MLflow model runs (`pyfunc_model.py`: `N x H x W x 3` uint8 arrays in, `N x H x W` uint8
masks out), what `python -m deeplab.serving.predict` runs, and what `python -m deeplab.serving.export` exports.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..evaluation.inference import predict_probs
from ..model import DeepLabV3Plus


class Segmenter(nn.Module):
    """`N x H x W x 3` (or `H x W x 3`) uint8 RGB -> `N x H x W` (or `H x W`) uint8 labels."""

    def __init__(self, net: DeepLabV3Plus, output_stride: int | None = None,
                 scales: Sequence[float] = (1.0,), flip: bool = False) -> None:
        super().__init__()
        self.net = net.eval()
        if output_stride is not None:
            self.net.set_output_stride(output_stride)
        self.scales, self.flip = tuple(float(s) for s in scales), bool(flip)

    @property
    def strategy(self) -> dict[str, object]:
        return {"output_stride": self.net.output_stride, "scales": list(self.scales),
                "flip": self.flip}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        single = images.dim() == 3
        batch = images.unsqueeze(0) if single else images
        if batch.dim() != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected RGB images N x H x W x 3 (or H x W x 3), got shape "
                             f"{tuple(images.shape)}")
        if batch.dtype != torch.uint8:
            raise ValueError(f"expected uint8 pixels (0-255), got {batch.dtype}")
        x = batch.permute(0, 3, 1, 2).to(self.net.mean.dtype).div(255)
        probs = predict_probs(self.net, x, self.scales, self.flip)
        labels = probs.argmax(1).to(torch.uint8)
        return labels[0] if single else labels
