"""PASCAL VOC 2012 (JPEGs, palette PNG masks with an ignore band, split lists) and SBD
(`.mat` ground truth)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.io

from ...data.classes import IGNORE, VOC_CLASSES, ClassList
from ...data.palette import save_label_png
from .scene import Rare, raw_label, render_scene, save_jpeg, semantic_label


def write_voc(root: Path, counts: dict[str, int], size: int, rng: np.random.Generator,
              classes: ClassList | None = None, rare: Rare | None = None) -> None:
    """`root/VOC2012` with JPEGs, palette PNG masks and split lists."""
    classes = classes or ClassList(VOC_CLASSES, ())
    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {}
    for split, count in counts.items():
        ids = [f"2012_{split[0]}{k:05d}" for k in range(count)]
        for name in ids:
            img, instances = render_scene(rng, size, len(classes), rare)
            save_jpeg(voc / "JPEGImages" / f"{name}.jpg", img)
            save_label_png(voc / "SegmentationClass" / f"{name}.png",
                           raw_label(semantic_label(instances, size), classes.ignore_index,
                              classes.reduce_zero_label),
                           classes.palette or None)
        lists[split] = ids
    lists["trainval"] = lists["train"] + lists["val"]
    for split, ids in lists.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def _save_mat(path: Path, data: dict) -> None:
    """A MATLAB 5 file whose bytes depend on `data` only: scipy writes the creation time into
    the 116-byte header text, which is replaced by a fixed one."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, data)
    raw = bytearray(buffer.getvalue())
    raw[:116] = b"MATLAB 5.0 MAT-file, written by the deeplab synthetic generator".ljust(116)
    path.write_bytes(bytes(raw))


def write_sbd(root: Path, count: int, size: int, rng: np.random.Generator,
              num_classes: int = 21) -> None:
    """`root/SBD/dataset/{img,cls}` with SBD's `.mat` ground truth (GTcls.Segmentation)."""
    ds = root / "SBD" / "dataset"
    (ds / "img").mkdir(parents=True, exist_ok=True)
    (ds / "cls").mkdir(parents=True, exist_ok=True)
    ids = [f"2011_s{k:05d}" for k in range(count)]
    for name in ids:
        img, instances = render_scene(rng, size, num_classes)
        save_jpeg(ds / "img" / f"{name}.jpg", img)
        seg = semantic_label(instances, size, band=0)  # SBD has no boundary band
        seg[seg == IGNORE] = 0
        present = np.unique(seg[seg > 0]).astype(np.uint8).reshape(-1, 1)
        boundaries = np.empty((num_classes - 1, 1), dtype=object)
        for c in range(num_classes - 1):
            boundaries[c, 0] = np.zeros((0, 0), dtype=np.uint8)
        gt = {"Segmentation": seg, "Boundaries": boundaries, "CategoriesPresent": present}
        _save_mat(ds / "cls" / f"{name}.mat", {"GTcls": gt})
    half = len(ids) * 4 // 5
    (ds / "train.txt").write_text("\n".join(ids[:half]) + "\n")
    (ds / "val.txt").write_text("\n".join(ids[half:]) + "\n")


