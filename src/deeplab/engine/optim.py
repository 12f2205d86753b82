"""SGD with the reference's weight decay rule and the "poly" learning-rate schedule, after an
optional linear warmup."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.schema import Schedule


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights (ndim > 1) only; none on BN parameters and biases."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]


def lr_factor(step: int, sched: Schedule) -> float:
    """The learning rate at optimizer step `step` over `sched.lr`: with `sched.warmup`, linear
    from `start_factor` to 1 over its iterations, then `(1 - k / rest) ** lr_power` for the k-th
    step after it (torch's `SequentialLR(LinearLR, PolynomialLR)` on the same settings);
    without, the poly decay over all iterations."""
    warm = sched.warmup
    if warm is None:
        return (1 - min(step, sched.iterations) / sched.iterations) ** sched.lr_power
    if step < warm.iterations:
        return warm.start_factor + (1 - warm.start_factor) * step / warm.iterations
    rest = sched.iterations - warm.iterations
    return (1 - min(step - warm.iterations, rest) / rest) ** sched.lr_power


def sgd_with_poly_schedule(model: nn.Module, sched: Schedule) -> tuple[torch.optim.SGD, Any]:
    """SGD + momentum, and the poly schedule `lr * (1 - it / iterations) ** lr_power` (after a
    warmup when `sched.warmup` is set: `lr_factor`).

    Without warmup the schedule is torch's `PolynomialLR`, which updates the rate by ratios; its
    rates agree with the closed form to ~1e-14 relative, and are identical once rounded to
    float32, the precision SGD applies them in.
    """
    optimizer = torch.optim.SGD(param_groups(model, sched.weight_decay), lr=sched.lr,
                                momentum=sched.momentum)
    if sched.warmup is None:
        return optimizer, torch.optim.lr_scheduler.PolynomialLR(
            optimizer, total_iters=sched.iterations, power=sched.lr_power)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, sched))
