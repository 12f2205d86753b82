"""SGD with the reference's weight decay rule and the "poly" learning-rate schedule."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn


def poly_lambda(total: int, power: float) -> Callable[[int], float]:
    """lr factor `(1 - it / total) ** power`."""
    return lambda it: max(0.0, 1.0 - it / total) ** power


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights (ndim > 1) only; none on BN parameters and biases."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
