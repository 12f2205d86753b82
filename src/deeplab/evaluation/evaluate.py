"""Whole-split evaluation on full images: confusion matrices overall and in boundary bands."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..data.dataset import load_sample
from ..model.inference import InferenceStrategy, ModelRunner
from .metrics import boundary_band, confusion_matrix, image_counts, scores


@torch.no_grad()
def evaluate(model: nn.Module | None, rows: pd.DataFrame, num_classes: int, device: torch.device,
             strategy: InferenceStrategy = InferenceStrategy(),
             trimap_widths: Sequence[int] = (), desc: str = "eval",
             keep_predictions: int = 0, runner: Any | None = None,
             predict: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, object]:
    """Evaluate every image of a split at its full size (padded to an exact size, see
    `inference`): the whole image through the model (or `runner`), or `predict` (`H x W x 3`
    uint8 -> `H x W` labels, e.g. sliding windows: `report.measure.windowed`).

    Returns `scores(cm)` plus `cm` (the confusion matrix), `per_image` (`N x 3 x C` true
    positive, false positive and false negative counts, for bootstrap intervals), `trimap`
    ({width: mIoU within that band}), `seconds_per_image` (inference only) and, if asked,
    the first `keep_predictions` (image, label, prediction). `runner` (uint8 `N x H x W x 3`
    -> `probs` / `labels`, e.g. a deployed ONNX file on its runtime) replaces the model.
    """
    if predict is None:
        runner = runner or ModelRunner(model, strategy, device)
        predict = lambda pixels: runner.labels(pixels[None])[0]  # noqa: E731

    def labels_of(image: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(predict(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))).long()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    band_cms = {w: torch.zeros_like(cm) for w in trimap_widths}
    kept, per_image = [], []
    seconds = 0.0
    for image_path, mask_path in tqdm(list(zip(rows["image"], rows["mask"])), desc=desc,
                                      unit="img", leave=False):
        image, label = load_sample(image_path, mask_path)
        start = time.perf_counter()
        pred = labels_of(image)
        seconds += time.perf_counter() - start
        image_cm = confusion_matrix(pred, label, num_classes)
        cm += image_cm
        per_image.append(image_counts(image_cm))
        if band_cms:
            lab = label.numpy()
            for w, bcm in band_cms.items():
                band = torch.from_numpy(boundary_band(lab, w))
                bcm += confusion_matrix(pred[band], label[band], num_classes)
        if len(kept) < keep_predictions:
            kept.append((image.permute(1, 2, 0).numpy(), label.numpy().astype(np.uint8),
                         pred.numpy().astype(np.uint8)))
    result = scores(cm)
    result["cm"] = cm.numpy()
    result["per_image"] = np.stack(per_image) if per_image else np.zeros((0, 3, num_classes), np.int64)
    result["trimap"] = {w: scores(b)["miou"] for w, b in band_cms.items()}
    result["samples"] = kept
    result["seconds_per_image"] = seconds / max(len(per_image), 1)
    return result
