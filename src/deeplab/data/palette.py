"""The PASCAL VOC colour palette and label-PNG reading and writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..io import atomic_path

IGNORE = 255


def voc_palette(n: int = 256) -> np.ndarray:
    """The VOC colour map: `n x 3` uint8, class i -> bit-interleaved RGB; 255 -> (224, 224, 192)."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


PALETTE = voc_palette()


def save_label_png(path: str | Path, label: np.ndarray) -> None:
    """Write an `H x W` uint8 label map as a VOC palette PNG, atomically."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"{path}: label map must be a 2-D uint8 array, got {label.dtype} {label.shape}")
    img = Image.fromarray(label, mode="P")
    img.putpalette(PALETTE.flatten().tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label PNG as class indices (palette index for mode P, value for mode L)."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"{path}: label PNG must be a palette (P) or grayscale (L) image, "
                             f"got mode {img.mode}")
        return np.array(img, dtype=np.uint8)


def colorize(label: np.ndarray) -> np.ndarray:
    """`H x W` labels -> `H x W x 3` VOC colours."""
    return PALETTE[label]


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """RGB image blended with the VOC colours of its labels (background keeps the image)."""
    blend = image * (1 - alpha) + colorize(label) * alpha
    return np.where((label == 0)[..., None], image, blend).astype(np.uint8)
