"""Label PNGs (palette images: class ids as indices, the dataset's colours) and overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..core.io import save_image
from .classes import IGNORE, IGNORE_COLOUR, voc_palette

Colours = Sequence[Sequence[int]]


def colour_table(colours: Colours | None = None) -> np.ndarray:
    """`256 x 3` uint8: the given class colours, the VOC colour map for the other ids (all of
    them by default), and the ignore colour at 255."""
    table = np.asarray(voc_palette(256), dtype=np.uint8)
    if colours is not None:
        given = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)[:255]
        table[:len(given)] = given
    table[IGNORE] = IGNORE_COLOUR
    return table


def label_image(label: np.ndarray, colours: Colours | None = None) -> Image.Image:
    """An `H x W` uint8 label map as a palette image (class id = palette index)."""
    img = Image.fromarray(label, mode="P")
    img.putpalette(colour_table(colours).flatten().tolist())
    return img


def save_label_png(path: str | Path, label: np.ndarray, colours: Colours | None = None) -> None:
    """Write an `H x W` uint8 label map as a palette PNG (class id = palette index), atomically."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"{path}: label map must be a 2-D uint8 array, got {label.dtype} {label.shape}")
    save_image(path, label_image(label, colours), format="PNG")


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label PNG as class indices (palette index for mode P, value for mode L)."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"{path}: label PNG must be a palette (P) or grayscale (L) image, "
                             f"got mode {img.mode}")
        return np.array(img, dtype=np.uint8)


def colorize(label: np.ndarray, colours: Colours | None = None) -> np.ndarray:
    """`H x W` labels -> `H x W x 3` colours."""
    return colour_table(colours)[label]


def overlay(image: np.ndarray, label: np.ndarray, colours: Colours | None = None,
            keep: int | None = 0, alpha: float = 0.55) -> np.ndarray:
    """RGB image blended with the colours of its labels; pixels of class `keep` (background)
    and ignored pixels show the image."""
    table = colour_table(colours) * alpha  # float64, as before: the same bytes
    out = np.empty_like(image)
    for top in range(0, image.shape[0], 256):  # row bands: memory stays small for any size
        rows, lab = image[top:top + 256], label[top:top + 256]
        blend = rows * (1 - alpha) + table[lab]
        plain = (lab == IGNORE) | ((lab == keep) if keep is not None else False)
        out[top:top + 256] = np.where(plain[..., None], rows, blend.astype(np.uint8))
    return out
