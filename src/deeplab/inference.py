"""Inference strategies of the paper's Table 5: output stride, multi-scale inputs, flip."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def predict_probs(model: nn.Module, image: torch.Tensor, scales: Sequence[float] = (1.0,),
                  flip: bool = False) -> torch.Tensor:
    """Class probabilities `N x C x H x W` for a float [0, 1] batch at its full size.

    Each scale resizes the input, the softmax output is resized back to the input size,
    and the probabilities of all scales (and their left-right flips) are averaged.
    """
    h, w = image.shape[-2:]
    total = None
    count = 0
    for s in scales:
        x = image if s == 1.0 else F.interpolate(
            image, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
            align_corners=True)
        views = [x, x.flip(-1)] if flip else [x]
        for k, v in enumerate(views):
            logits = model(v)
            if k == 1:
                logits = logits.flip(-1)
            probs = F.interpolate(logits.float(), size=(h, w), mode="bilinear",
                                  align_corners=True).softmax(1)
            total = probs if total is None else total + probs
            count += 1
    return total / count


def to_float_image(batch: torch.Tensor) -> torch.Tensor:
    """uint8 `N x 3 x H x W` -> float [0, 1]."""
    return batch.float().div_(255)
