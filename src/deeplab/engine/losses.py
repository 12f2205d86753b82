"""Training losses: one table (`LOSSES`, keyed by `core.choices.losses.LOSSES`), and the objective a
schedule's `loss` describes (one loss, or a weighted sum such as `ce+dice` or `ce+0.5*lovasz`,
parsed by `core.choices.losses.parse_loss`).

Every loss returns the loss of the *global* batch, the same value on every process: the
sums it needs (pixel losses, counts, per-class intersections) go through `all_sum`, and
Lovász, which sorts every pixel of the batch, through `all_gather`. Backpropagating that
value on each process and letting DDP average the gradients gives the gradient of the
global-batch loss (the reductions' backward passes sum over processes), so 2 processes
equal 1 for every loss, by construction. A loss added to the table gets this by computing
from `Batch`'s reductions; there is no per-pixel contract to break.

Definitions (each tested equal to its peer on the same logits and labels): `ce` torch's
cross-entropy (weighted mean with class weights); `ohem` the TF original's online hard-pixel
mining (mean of the `top_k_percent_pixels` largest pixel losses, the kept fraction falling
linearly from 1 over `hard_example_mining_step` iterations); `focal`, `dice` and `lovasz`
segmentation-models-pytorch's multiclass `FocalLoss` (one-vs-rest sigmoid focal terms, gamma
2, averaged over classes), `DiceLoss` (1 - soft Dice per class over the batch, classes absent
from the labels count 0, averaged) and `LovaszLoss` (Lovász-softmax over the batch, classes
present). Ignored pixels (255) take part in none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.choices import losses as choices
from ..core.errors import ConfigError
from ..data.palette import IGNORE
from .distributed import all_gather, all_sum

FOCAL_GAMMA = 2.0
DICE_EPS = 1e-7


@dataclass(frozen=True)
class Batch:
    """One process's share of a batch: float logits at the label size, the labels, the class
    weights (None: all 1) and the iteration; the reductions over all processes."""

    logits: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor | None = None
    iteration: int = 0
    top_k: float = 1.0
    mining_steps: int = 0

    @property
    def valid(self) -> torch.Tensor:
        return self.labels != IGNORE

    def one_hot(self) -> torch.Tensor:
        """`N x C x H x W` float targets, zero at ignored pixels."""
        c = self.logits.shape[1]
        hot = F.one_hot(torch.where(self.valid, self.labels, 0), c).permute(0, 3, 1, 2)
        return hot.to(self.logits.dtype) * self.valid[:, None]

    def class_mean(self, per_class: torch.Tensor) -> torch.Tensor:
        """The mean of per-class values, weighted by the class weights when there are some."""
        if self.weights is None:
            return per_class.mean()
        return (per_class * self.weights).sum() / self.weights.sum()


def cross_entropy(b: Batch) -> torch.Tensor:
    total = F.cross_entropy(b.logits, b.labels, weight=b.weights, ignore_index=IGNORE,
                            reduction="sum")
    if b.weights is None:
        return all_sum(total) / all_sum(b.valid.sum().float()).clamp_min(1)
    return all_sum(total) / all_sum(b.weights[b.labels[b.valid]].sum()).clamp_min(1e-12)


def kept_fraction(top_k: float, mining_steps: int, iteration: int) -> float:
    """The TF original's schedule: 1.0 falling linearly to `top_k` over `mining_steps`."""
    if mining_steps <= 0:
        return top_k
    ratio = min(1.0, iteration / mining_steps)
    return ratio * top_k + (1.0 - ratio)


def ohem(b: Batch) -> torch.Tensor:
    pixel = F.cross_entropy(b.logits, b.labels, weight=b.weights, ignore_index=IGNORE,
                            reduction="none")
    valid = b.valid
    count = int(all_sum(valid.sum()).item())
    k = max(1, int(kept_fraction(b.top_k, b.mining_steps, b.iteration) * count)) if count else 0
    if k == 0:
        return b.logits.sum() * 0.0
    ranked = all_gather(torch.where(valid, pixel.detach(), float("-inf")).flatten())
    threshold = ranked.topk(k).values[-1]
    kept = valid & (pixel >= threshold)
    return all_sum((pixel * kept).sum()) / all_sum(kept.sum().float()).clamp_min(1)


def focal(b: Batch) -> torch.Tensor:
    target = b.one_hot()
    logp = F.binary_cross_entropy_with_logits(b.logits, target, reduction="none")
    term = (1.0 - torch.exp(-logp)).pow(FOCAL_GAMMA) * logp * b.valid[:, None]
    per_class = all_sum(term.sum((0, 2, 3))) / all_sum(b.valid.sum().float()).clamp_min(1)
    return b.class_mean(per_class)


def dice(b: Batch) -> torch.Tensor:
    target = b.one_hot()
    probs = b.logits.log_softmax(1).exp() * b.valid[:, None]
    dims = (0, 2, 3)
    p_sum, t_sum = all_sum(probs.sum(dims)), all_sum(target.sum(dims))
    diff = all_sum((probs - target).abs().sum(dims))
    inter = (p_sum + t_sum - diff) / 2
    score = inter / (inter + 0.5 * (p_sum - inter) + 0.5 * (t_sum - inter)).clamp_min(DICE_EPS)
    return b.class_mean((1.0 - score) * (t_sum > 0).to(score.dtype))


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at sorted errors (Berman et al.,
    Alg. 1)."""
    total = fg_sorted.sum()
    intersection = total - fg_sorted.cumsum(0)
    union = total + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def lovasz(b: Batch) -> torch.Tensor:
    c = b.logits.shape[1]
    probs = all_gather(b.logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, c))
    labels = all_gather(b.labels.reshape(-1))
    keep = labels != IGNORE
    probs, labels = probs[keep], labels[keep]
    losses, present = [], []
    for k in range(c):
        fg = (labels == k).to(probs.dtype)
        if not fg.any():
            continue
        errors, order = (fg - probs[:, k]).abs().sort(descending=True)
        losses.append(torch.dot(errors, _lovasz_grad(fg[order])))
        present.append(k)
    if not losses:
        return b.logits.sum() * 0.0
    values = torch.stack(losses)
    if b.weights is None:
        return values.mean()
    w = b.weights[present]
    return (values * w).sum() / w.sum()


LOSSES: dict[str, Callable[[Batch], torch.Tensor]] = {
    "ce": cross_entropy, "ohem": ohem, "focal": focal, "dice": dice, "lovasz": lovasz}
if tuple(LOSSES) != choices.LOSSES:  # the catalogue names what this table holds
    raise ImportError(f"engine.losses.LOSSES {tuple(LOSSES)} differs from core.choices.losses.LOSSES")


def parse_loss(expression: str) -> list[tuple[float, str]]:
    """`ce+0.5*dice` -> [(1.0, 'ce'), (0.5, 'dice')]; ConfigError naming an unknown term."""
    try:
        return choices.parse_loss(expression)
    except ValueError as exc:
        raise ConfigError(f"loss: {exc}") from None


class Objective:
    """What a schedule trains against: `loss` terms, class weights, the OHEM settings."""

    def __init__(self, expression: str = "ce", weights: Sequence[float] | None = None,
                 top_k: float = 1.0, mining_steps: int = 0) -> None:
        self.terms = parse_loss(expression)
        self.weights = None if weights is None else torch.tensor(list(weights), dtype=torch.float32)
        self.top_k, self.mining_steps = top_k, mining_steps

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, iteration: int = 0) -> torch.Tensor:
        weights = None if self.weights is None else self.weights.to(logits.device, logits.dtype)
        if weights is not None and weights.numel() != logits.shape[1]:
            raise ConfigError(f"class_weights: {weights.numel()} weights for "
                              f"{logits.shape[1]} classes")
        batch = Batch(logits, labels, weights, iteration, self.top_k, self.mining_steps)
        if len(self.terms) == 1 and self.terms[0][0] == 1.0:
            return LOSSES[self.terms[0][1]](batch)
        return sum(coef * LOSSES[name](batch) for coef, name in self.terms)

    def shares(self, labels: Sequence[torch.Tensor]) -> list[float]:
        """What each of the micro-batches of one accumulated step weighs in its loss: for `ce`
        its share of the step's labelled pixels (class-weighted), so that the accumulated
        gradient equals the gradient of one batch of them all; for the other losses, which do
        not split into pixel sums (Dice, Lovász, OHEM's top-k), 1/k each: the mean of the
        micro-batch losses, as mmengine's and smp's trainers accumulate."""
        if [name for _, name in self.terms] != ["ce"]:
            return [1.0 / len(labels)] * len(labels)
        if self.weights is None:
            mass = torch.stack([(y != IGNORE).sum().double() for y in labels])
        else:
            w = self.weights.to(labels[0].device, torch.float64)
            mass = torch.stack([w[y[y != IGNORE].long()].sum() for y in labels])
        mass = all_sum(mass)
        total = float(mass.sum())
        return [float(m) / total if total > 0 else 1.0 / len(labels) for m in mass]


def class_weights(setting: str | Sequence[float] | None, pixels: Sequence[int]) -> list[float] | None:
    """Per-class weights from the training split's pixel counts (preprocess's class_stats):

    - `inverse_frequency`: total / (classes x pixels of the class), scikit-learn's "balanced";
    - `median_frequency`: median frequency / frequency (Eigen & Fergus), frequencies over the
      labeled pixels of the split;
    - a list: as given. Classes without pixels get weight 0 (they never occur in a label).
    """
    if setting is None:
        return None
    counts = np.asarray(pixels, dtype=np.float64)
    if not isinstance(setting, str):
        if len(setting) != len(counts):
            raise ConfigError(f"class_weights: {len(setting)} weights for {len(counts)} classes")
        return [float(w) for w in setting]
    present = counts > 0
    if not present.any():
        raise ConfigError("class_weights: the training split has no labeled pixels")
    if setting == "inverse_frequency":
        weights = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
    else:
        freq = counts / counts.sum()
        weights = np.where(present, np.median(freq[present]) / np.maximum(freq, 1e-300), 0.0)
    return [float(w) for w in weights]
