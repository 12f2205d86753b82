"""Segmentation metrics from one confusion matrix accumulated over a whole split."""

from __future__ import annotations

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
    """mIoU, per-class IoU, pixel accuracy, mean class accuracy and frequency-weighted IoU.

    Classes absent from both ground truth and predictions have no IoU (NaN) and are left
    out of the mean, as in the reference evaluation.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    gt, pr = cm.sum(1), cm.sum(0)
    union = gt + pr - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = cm.sum()
    freq = gt / total if total else gt
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "pixel_acc": float(tp.sum() / total) if total else 0.0,
        "mean_acc": float(np.nanmean(acc)) if np.isfinite(acc).any() else 0.0,
        "fwiou": float(np.nansum(freq * np.nan_to_num(iou))),
        "iou": iou.tolist(),
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
