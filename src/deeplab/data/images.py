"""Reading an image as uint8 RGB, the same way wherever one is read: training, evaluation,
predict, int8 calibration and the served model. EXIF orientation is applied (the upright
view a viewer shows, which labelling tools draw masks on), and 16- and 32-bit grey levels
are rescaled to 0-255."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from ..core.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}  # read as images


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    """`H x W x 3` uint8; 16- and 32-bit grey levels are rescaled to 0-255, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.array(img.convert("RGB"))


def read_rgb(source: str | Path | IO[bytes], max_pixels: int | None = None,
             name: str | None = None) -> np.ndarray:
    """`H x W x 3` uint8 of an image file (or a binary stream); an InputError naming it
    (`name`, else the path) when it is not a readable image, or when it has more than
    `max_pixels` pixels (judged from its header, before anything is decoded)."""
    label = name or str(source)
    try:
        with Image.open(source) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise InputError(f"{label}: {img.width}x{img.height} is more than the "
                                 f"{max_pixels:,} pixels allowed")
            img.load()
            return _to_uint8_rgb(ImageOps.exif_transpose(img))
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"{label}: skipped, too many pixels for an image (decompression-bomb "
                         f"guard: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise InputError(f"{label}: not a readable image ({exc})") from None


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as `read_rgb` returns it (EXIF orientation applied)."""
    orientation = img.getexif().get(0x0112, 1)  # 5-8: rotated by 90 or 270 degrees
    return (img.height, img.width) if orientation in (5, 6, 7, 8) else img.size
