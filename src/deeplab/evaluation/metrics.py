"""Segmentation metrics from one confusion matrix accumulated over a whole split."""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.ndimage as ndi
import torch

from ..data.palette import IGNORE


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """`num_classes x num_classes` counts, rows = ground truth, columns = prediction; 255 ignored."""
    keep = target != IGNORE
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes).cpu()


def scores(cm: torch.Tensor | np.ndarray) -> dict[str, object]:
    """mIoU, per-class IoU, pixel accuracy, mean class accuracy, frequency-weighted IoU, and
    Dice (F1), precision and recall per class and averaged.

    Classes absent from both ground truth and predictions have no IoU (NaN) and are left
    out of the mean, as in the reference evaluation; the Dice, precision and recall means are
    over the same classes (a class never predicted has precision 0, one never labelled recall
    0: scikit-learn's `zero_division=0`).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    gt, pr = cm.sum(1), cm.sum(0)
    union = gt + pr - tp
    present = union > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
        dice = np.where(present, 2 * tp / (gt + pr), np.nan)
        precision = np.where(present, np.where(pr > 0, tp / pr, 0.0), np.nan)
        recall = np.where(present, np.where(gt > 0, tp / gt, 0.0), np.nan)
    total = cm.sum()
    freq = gt / total if total else gt

    def mean(values: np.ndarray) -> float:
        return float(np.nanmean(values)) if present.any() else 0.0

    return {
        "miou": mean(iou),
        "pixel_acc": float(tp.sum() / total) if total else 0.0,
        "mean_acc": float(np.nanmean(acc)) if np.isfinite(acc).any() else 0.0,
        "fwiou": float(np.nansum(freq * np.nan_to_num(iou))),
        "mdice": mean(dice), "mprecision": mean(precision), "mrecall": mean(recall),
        "iou": iou.tolist(), "dice": dice.tolist(), "precision": precision.tolist(),
        "recall": recall.tolist(),
    }


def boundary_band(target: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` px of an object boundary (label change or the 255 void band)."""
    t = target.astype(np.int16)
    edge = t == IGNORE
    edge[:, 1:] |= t[:, 1:] != t[:, :-1]
    edge[:, :-1] |= t[:, 1:] != t[:, :-1]
    edge[1:, :] |= t[1:, :] != t[:-1, :]
    edge[:-1, :] |= t[1:, :] != t[:-1, :]
    if not edge.any():
        return edge
    return ndi.distance_transform_edt(~edge) <= width


def image_counts(cm: torch.Tensor | np.ndarray) -> np.ndarray:
    """`3 x C` (true positives, false positives, false negatives) of one image's confusion
    matrix: what the split's IoU sums over."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    return np.stack([tp, cm.sum(0) - tp, cm.sum(1) - tp])


def miou_of_counts(counts: np.ndarray) -> float:
    """mIoU of summed `3 x C` counts (classes absent from ground truth and predictions left
    out, as `scores`)."""
    tp, fp, fn = counts
    union = tp + fp + fn
    if not (union > 0).any():
        return 0.0
    return float(np.mean(tp[union > 0] / union[union > 0]))


def mdice_of_counts(counts: np.ndarray) -> float:
    """Mean Dice (F1) of summed `3 x C` counts, over the classes `miou_of_counts` averages."""
    tp, fp, fn = counts
    union = tp + fp + fn
    if not (union > 0).any():
        return 0.0
    return float(np.mean(2 * tp[union > 0] / (union[union > 0] + tp[union > 0])))


def bootstrap_miou(per_image: np.ndarray, resamples: int = 1000, level: float = 0.95,
                   seed: int = 0, score: Callable[[np.ndarray], float] = miou_of_counts
                   ) -> tuple[float, float]:
    """A `level` interval of the split's mIoU (or another `score` of summed counts, e.g.
    `mdice_of_counts`) from resampling its images with replacement (`per_image`: `N x 3 x C`
    counts from `image_counts`; scipy's percentile bootstrap)."""
    from scipy.stats import bootstrap

    if len(per_image) < 2:
        value = score(per_image.sum(0))
        return value, value
    result = bootstrap((np.arange(len(per_image)),),
                       lambda idx: score(per_image[idx.astype(int)].sum(0)),
                       vectorized=False, n_resamples=resamples, confidence_level=level,
                       method="percentile", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
