"""Which unlabeled images to label next: each image of the pool scored by the model's
uncertainty about it, highest first.

Scores (`rank.score`), each in [0, 1], from probabilities calibrated with evaluate's
temperature:
- `entropy`: the mean over the image's pixels of the normalised entropy H(p) / log(C);
- `low_confidence`: the share of its pixels whose predicted class has a probability below
  `rank.threshold`.
An image the model has seen the like of many times scores low; a new kind of image, on which
the model hesitates between classes, scores high. Each row also gives the share of the image
predicted as each class (`area_<class>`), so a team can see what it would be labelling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..core.errors import InputError
from ..core.hashing import file_sha256
from ..data.classes import ClassList
from ..data.images import read_rgb
from ..data.palette import overlay
from ..serving.windows import WHOLE_PIXELS, segment_image
from .confidence import calibrate, confidence_map

log = logging.getLogger(__name__)
SCORES = ("entropy", "low_confidence")


@dataclass(frozen=True)
class ImageScore:
    score: float
    labels: np.ndarray       # H x W class ids
    confidence: np.ndarray   # H x W max probability (calibrated)


class _Accumulator:
    """An `on_probs` visitor that sums the image's score and keeps its confidence map."""

    def __init__(self, height: int, width: int, score: str, threshold: float,
                 temperature: float) -> None:
        self.score, self.threshold, self.temperature = score, threshold, temperature
        self.total = 0.0
        self.confidence = np.zeros((height, width), dtype=np.float32)

    def __call__(self, y: int, probs: np.ndarray) -> None:
        p = calibrate(probs, self.temperature)
        top = p.max(0)
        self.confidence[y:y + p.shape[1]] = top
        if self.score == "entropy":
            self.total += float((1.0 - confidence_map(p, "entropy")).sum(dtype=np.float64))
        else:
            self.total += float((top < self.threshold).sum())


def score_image(runner: Any, image: np.ndarray, score: str = "entropy", threshold: float = 0.5,
                temperature: float = 1.0, tile: int | None = None, overlap: float = 0.25,
                whole_pixels: int = WHOLE_PIXELS) -> ImageScore:
    """The uncertainty score of one `H x W x 3` uint8 image (windows above `whole_pixels`)."""
    if score not in SCORES:
        raise ValueError(f"rank.score: expected one of {', '.join(SCORES)}, got {score!r}")
    acc = _Accumulator(*image.shape[:2], score, threshold, temperature)
    labels = segment_image(runner, image, tile, overlap, whole_pixels, acc)
    return ImageScore(acc.total / labels.size, labels, acc.confidence)


def rank_pool(runner: Any, images: Sequence[str], classes: ClassList, score: str = "entropy",
              threshold: float = 0.5, temperature: float = 1.0, max_pixels: int | None = None,
              signatures: Sequence[str] | None = None) -> pd.DataFrame:
    """The pool's images ranked, most uncertain first: `image`, `score`, `rank` and the share
    predicted as each class (`area_<name>`). An image of more than `max_pixels` pixels is
    left out with a line, judged from its header (no unbounded work); unreadable images, or
    images whose bytes no longer match their listed `signatures` (fetch's `image_sig`), stop
    the ranking with one InputError naming each of them."""
    rows, failed = [], []
    for k, path in enumerate(images):
        try:
            if signatures is not None and file_sha256(path)[:len(signatures[k])] != signatures[k]:
                raise InputError(f"{path}: changed since fetch listed it; rerun dvc repro")
            image = read_rgb(path, max_pixels=max_pixels)
        except InputError as exc:
            if "pixels allowed" in str(exc):
                log.warning("%s: left out of the ranking (rank.max_pixels)", exc)
            else:
                failed.append(str(exc))
            continue
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror or exc}")
            continue
        result = score_image(runner, image, score, threshold, temperature)
        areas = np.bincount(result.labels.ravel(), minlength=len(classes))[:len(classes)]
        rows.append({"image": path, "score": round(result.score, 6),
                     **{f"area_{name}": round(float(a) / result.labels.size, 4)
                        for name, a in zip(classes.names, areas)}})
        del image, result
    if failed:
        raise InputError(f"{len(failed)} image(s) of the pool could not be read: "
                         + "; ".join(failed[:10]))
    table = pd.DataFrame(rows, columns=["image", "score", *[f"area_{n}" for n in classes.names]])
    table = table.iloc[np.argsort(-table["score"].to_numpy(), kind="stable")].reset_index(drop=True)
    table.insert(2, "rank", np.arange(1, len(table) + 1))
    return table


def top_images(runner: Any, table: pd.DataFrame, k: int, score: str = "entropy",
               threshold: float = 0.5, temperature: float = 1.0
               ) -> list[tuple[str, np.ndarray, ImageScore]]:
    """(path, image, ImageScore) of the first `k` rows of a ranking, scored again (only these
    are kept in memory)."""
    out = []
    for path in table["image"].head(k):
        image = read_rgb(path)
        out.append((path, image, score_image(runner, image, score, threshold, temperature)))
    return out


def contact_sheet(top: list[tuple[str, np.ndarray, ImageScore]], classes: ClassList,
                  score: str) -> Figure:
    """The top images, one row each: the image, the predicted classes over it, and the
    confidence map (white = sure), titled with rank, score and file name."""
    rows = max(len(top), 1)
    fig = Figure(figsize=(7.5, 2.3 * rows))
    axes = np.atleast_2d(fig.subplots(rows, 3))
    if not top:
        for ax in axes.ravel():
            ax.axis("off")
        axes[0, 1].text(0.5, 0.5, "no unlabeled images (data.unlabeled_root)", ha="center")
        return fig
    for k, (path, image, result) in enumerate(top):
        panels = [image, overlay(image, result.labels, classes.palette, classes.background),
                  result.confidence]
        for j, picture in enumerate(panels):
            ax = axes[k, j]
            grey = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if j == 2 else {}
            ax.imshow(picture, interpolation="nearest", **grey)
            ax.axis("off")
        axes[k, 0].set_title(f"#{k + 1} {score} {result.score:.3f}: {Path(path).name}",
                             fontsize=8, loc="left")
        axes[k, 2].set_title("confidence (white = sure)", fontsize=8)
    fig.tight_layout()
    return fig
