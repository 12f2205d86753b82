"""Checking input samples and applying `preprocess.on_bad_sample` (error | skip)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BadSampleError
from .palette import IGNORE

log = logging.getLogger(__name__)
__all__ = ["BadSampleError", "SampleGuard", "check_image", "check_label"]


def check_image(path: Path, expected_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Decode an image fully; return its (width, height). Raise BadSampleError if unusable."""
    if not path.is_file():
        raise BadSampleError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            size = img.size
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise BadSampleError(f"{path}: corrupt or unreadable image ({exc})") from exc
    if expected_size is not None and size != tuple(expected_size):
        raise BadSampleError(f"{path}: image is {size[0]}x{size[1]}, annotations say "
                             f"{expected_size[0]}x{expected_size[1]}")
    return size


def check_label(label: np.ndarray, path: Path | str, image_size: tuple[int, int],
                num_classes: int = 21) -> None:
    """A label map must match its image's size and hold ids in [0, num_classes) or 255."""
    h, w = label.shape[:2]
    if (w, h) != tuple(image_size):
        raise BadSampleError(f"{path}: mask is {w}x{h} but its image is {image_size[0]}x{image_size[1]}")
    bad = np.unique(label[(label >= num_classes) & (label != IGNORE)])
    if bad.size:
        raise BadSampleError(f"{path}: label ids {bad.tolist()} outside [0, {num_classes}) and 255")


@dataclass
class SampleGuard:
    """Raise on a bad sample (`error`), or log it and count it (`skip`)."""

    policy: str = "error"
    skipped: list[str] = field(default_factory=list)

    def __call__(self, exc: BadSampleError) -> None:
        if self.policy == "error":
            raise exc
        log.warning("skipping bad sample: %s", exc)
        self.skipped.append(str(exc))
