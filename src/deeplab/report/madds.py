"""Multiply-add accounting, the paper's cost measure (Table 5 of the V3+ paper)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_madds(model: nn.Module, input_size: tuple[int, int], batch_size: int = 1) -> int:
    """Multiply-adds of one forward pass of `model` on a `batch_size x 3 x H x W` input.

    torch's `FlopCounterMode` counts two FLOPs per multiply-add of every convolution (groups
    and dilation included; a dilated conv costs the same as a dense one) and matrix product
    (linear layers). Not counted: biases, batch norm (it folds into the preceding conv at
    inference), activations, pooling and bilinear resizing; the paper's counts follow the
    same rule.
    """
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(batch_size, 3, *input_size, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
