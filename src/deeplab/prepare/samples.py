"""Checking input samples, turning raw label files into class-id masks, and applying
`preprocess.on_bad_sample` (error | skip)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from ..core.errors import BadSampleError
from ..data.classes import IGNORE, IGNORE_COLOUR
from ..data.images import upright_size

log = logging.getLogger(__name__)
__all__ = ["BadSampleError", "LabelRules", "SampleGuard", "check_image", "read_raw_label"]


def check_image(path: Path, expected_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Decode an image fully; return its (width, height). Raise BadSampleError if unusable."""
    if not path.is_file():
        raise BadSampleError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            size = upright_size(img)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise BadSampleError(f"{path}: corrupt or unreadable image ({exc})") from exc
    if expected_size is not None and size != tuple(expected_size):
        raise BadSampleError(f"{path}: image is {size[0]}x{size[1]}, annotations say "
                             f"{expected_size[0]}x{expected_size[1]}")
    return size


def _sbd_label(path: Path) -> np.ndarray:
    try:
        gt = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
        return np.asarray(gt.Segmentation, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - scipy raises assorted types for bad .mat files
        raise BadSampleError(f"{path}: not an SBD GTcls .mat file ({exc})") from exc


def read_raw_label(path: Path, kind: str) -> np.ndarray:
    """A label file as stored: `H x W` values (single-channel or palette PNG, SBD `.mat`,
    Cityscapes labelIds) or `H x W x 3` colours (an RGB colour-coded PNG)."""
    if not path.is_file():
        raise BadSampleError(f"{path}: mask file not found")
    if kind == "mat":
        return _sbd_label(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "L"):
                return np.array(img, dtype=np.uint8)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit ids: checked against the classes
                return np.array(img).astype(np.int32)
            if img.mode in ("RGB", "RGBA") and kind == "png":
                return np.array(img.convert("RGB"), dtype=np.uint8)
            mode = img.mode
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise BadSampleError(f"{path}: corrupt or unreadable mask ({exc})") from exc
    raise BadSampleError(f"{path}: a mask must be a single-channel (8- or 16-bit), palette or RGB "
                         f"colour PNG, got mode {mode}")


@dataclass(frozen=True)
class LabelRules:
    """How raw label values become class ids 0..N-1 (and 255 = ignore).

    Single-channel values (8- or 16-bit): `ignore_index` -> 255, values below N kept, anything
    else an error naming the file and the values. With `reduce_zero_label` (ADE20K): 0 -> 255 and
    k -> k-1 first. `lookup` (Cityscapes labelIds -> trainIds) maps values first; -1 marks ids
    outside the official table (an error). RGB colours: the class colours, and VOC's void
    colour (224, 224, 192) -> 255. Classes are at most 255 (uint8 masks, 255 = ignore).
    """

    num_classes: int
    ignore_index: int = IGNORE
    colours: tuple[tuple[int, int, int], ...] = ()
    lookup: tuple[int, ...] | None = None
    reduce_zero_label: bool = False

    def convert(self, raw: np.ndarray, path: Path | str, image_size: tuple[int, int]) -> np.ndarray:
        h, w = raw.shape[:2]
        if (w, h) != tuple(image_size):
            raise BadSampleError(f"{path}: mask is {w}x{h} but its image is "
                                 f"{image_size[0]}x{image_size[1]}")
        if raw.ndim == 3:
            return self._from_colours(raw, path)
        if self.lookup is not None:
            table = np.asarray(self.lookup, dtype=np.int16)
            outside = raw >= len(table)
            mapped = table[np.where(outside, 0, raw)]
            unknown = np.unique(raw[(mapped < 0) | outside])
            if unknown.size:
                raise BadSampleError(f"{path}: label ids {unknown.tolist()[:10]} are not in the "
                                     f"official table")
            return mapped.astype(np.uint8)
        values = raw.astype(np.int32)
        ignored = values == self.ignore_index
        if self.reduce_zero_label:
            ignored |= values == 0
            values = values - 1
        bad = np.unique(raw[~ignored & ((values >= self.num_classes) | (values < 0))])
        if bad.size:
            shift = " (reduce_zero_label: value k is class k-1)" if self.reduce_zero_label else ""
            raise BadSampleError(f"{path}: label ids {bad.tolist()[:10]} outside [0, "
                                 f"{self.num_classes}){shift} and the ignore value "
                                 f"{self.ignore_index}")
        return np.where(ignored, IGNORE, values).astype(np.uint8)

    def _from_colours(self, rgb: np.ndarray, path: Path | str) -> np.ndarray:
        codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
        known = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(self.colours)}
        known.setdefault((IGNORE_COLOUR[0] << 16) | (IGNORE_COLOUR[1] << 8) | IGNORE_COLOUR[2], IGNORE)
        label = np.full(codes.shape, IGNORE, dtype=np.uint8)
        matched = np.zeros(codes.shape, dtype=bool)
        for code, class_id in known.items():
            hit = codes == code
            label[hit] = class_id
            matched |= hit
        if not matched.all():
            y, x = np.argwhere(~matched)[0]
            r, g, b = (int(v) for v in rgb[y, x])
            raise BadSampleError(f"{path}: colour ({r}, {g}, {b}) at x={x}, y={y} matches no class "
                                 f"of data.palette (nor the ignore colour {IGNORE_COLOUR})")
        return label


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
