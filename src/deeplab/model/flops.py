"""Multiply-add accounting, the paper's cost measure (Table 5 of the V3+ paper)."""

from __future__ import annotations

import torch
from torch import nn


def _conv_madds(module: nn.Conv2d, output: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    per_output = (module.in_channels // module.groups) * kh * kw
    return output.numel() * per_output


def _linear_madds(module: nn.Linear, output: torch.Tensor) -> int:
    return output.numel() * module.in_features


def count_madds(model: nn.Module, input_size: tuple[int, int], batch_size: int = 1) -> int:
    """Multiply-adds of one forward pass of `model` on a `batch_size x 3 x H x W` input.

    Counted: every convolution (groups and dilation included; a dilated conv costs the same
    as a dense one) and linear layer, one multiply-add per weight per output element.
    Not counted: biases, batch norm (it folds into the preceding conv at inference),
    activations, pooling and bilinear resizing; the paper's counts follow the same rule.
    """
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += _conv_madds(module, output)
        elif isinstance(module, nn.Linear):
            total += _linear_madds(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(batch_size, 3, *input_size, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
