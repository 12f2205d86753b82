"""Large images in tiles (mmsegmentation's `slide` mode): square windows of `tile` pixels at a
stride of `tile * (1 - overlap)`, the last ones shifted to end at the border, each window's
class probabilities summed into the pixels it covers and divided by the count.

What is averaged is the strategy's output, the class probabilities (mmseg averages logits; a
multi-scale strategy only defines averaged probabilities, so every runtime returns those).
Memory grows with the window and the image width, not the image: windows are run one band
of rows at a time, and a band's rows are turned into labels as soon as no later window
covers them. The floor is one band of `C x tile x W` float32 sums.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

ProbsFn = Callable[[np.ndarray], np.ndarray]  # uint8 N x h x w x 3 -> float N x C x h x w
ProbsVisitor = Callable[[int, np.ndarray], None]  # (first row, C x n x W probabilities)
WHOLE_PIXELS = 4_000_000  # above this, windows by default (a 2000 x 2000 photo runs whole)
DEFAULT_TILE = 769        # k * 16 + 1: exact align_corners geometry at output stride 16 and 8
DEFAULT_OVERLAP = 0.25


def window_starts(size: int, tile: int, stride: int) -> list[int]:
    """Window origins along one axis: every `stride`, the last one ending at `size`."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def tile_stride(tile: int, overlap: float) -> int:
    """The step between windows for an `overlap` fraction in [0, 1)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    return max(1, int(round(tile * (1.0 - overlap))))


def predict_tiled(probs_fn: ProbsFn, image: np.ndarray, tile: int, overlap: float,
                  on_probs: ProbsVisitor | None = None) -> np.ndarray:
    """Labels `H x W` (uint8) of an `H x W x 3` uint8 image by sliding windows; `on_probs(y,
    probs)` sees the averaged probabilities of each finished band of rows from row `y`
    (`C x n x W`; for confidence maps and calibration)."""
    h, w = image.shape[:2]
    stride = tile_stride(tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    rows, cols = window_starts(h, tile, stride), window_starts(w, tile, stride)
    labels = np.empty((h, w), dtype=np.uint8)
    sums: np.ndarray | None = None     # C x th x W: the band of rows [y, y + th)
    counts = np.zeros((th, w), dtype=np.float32)
    for i, y in enumerate(rows):
        for x in cols:
            window = probs_fn(np.ascontiguousarray(image[None, y:y + th, x:x + tw]))[0]
            if sums is None:
                sums = np.zeros((window.shape[0], th, w), dtype=np.float32)
            sums[:, :, x:x + tw] += window
            counts[:, x:x + tw] += 1
        n = (rows[i + 1] if i + 1 < len(rows) else h) - y  # rows no later window covers
        done = sums[:, :n]
        done /= counts[None, :n]
        labels[y:y + n] = done.argmax(0)
        if on_probs is not None:
            on_probs(y, done)
        sums[:, :th - n] = sums[:, n:].copy()  # the rest of the band moves to the top
        sums[:, th - n:] = 0
        counts[:th - n] = counts[n:].copy()
        counts[th - n:] = 0
    return labels


def segment_image(runner: Any, image: np.ndarray, tile: int | None, overlap: float,
                  whole_pixels: int = WHOLE_PIXELS, on_probs: ProbsVisitor | None = None
                  ) -> np.ndarray:
    """`H x W` labels: the whole image at once, or sliding windows of `tile` (the default
    window above `whole_pixels`, so memory stays bounded for any size). `on_probs(y, probs)`
    sees the class probabilities (`runner.probs`), in bands of rows when windowed."""
    h, w = image.shape[:2]
    if tile is None and h * w > whole_pixels:
        tile = DEFAULT_TILE
    if tile is None:
        if on_probs is None:
            return runner.labels(image[None])[0]
        probs = runner.probs(image[None])[0]
        on_probs(0, probs)
        return probs.argmax(0).astype(np.uint8)
    return predict_tiled(runner.probs, image, tile, overlap, on_probs)
