"""Raw datasets -> processed split lists, label PNGs, class statistics, hard-image list.

Output directory layout (written atomically: the whole directory appears at the end):
  masks/{coco_train,coco_val,voc}/<id>.png   VOC palette label PNGs
  coco_train.csv, coco_val.csv               id,image,mask,image_sig (COCO-derived, pretraining)
  voc_train_aug.csv, voc_val.csv             id,image,mask,image_sig (VOC train + SBD, VOC val)

`image_sig` (size and modification time of the image) makes a list change when one of its
images does, so the stages that read the list rerun. `workers` processes convert samples in
parallel (forked, Linux); the output is identical for any number of workers.
  class_stats.csv                            split,class_id,class,pixels,images
  hard_images.txt                            train_aug ids containing a hard class
  summary.json                               counts, dropped and skipped samples
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import scipy.io
from tqdm import tqdm

from ..config import VOC_CLASSES, PreprocessConfig
from ..errors import MissingFileError
from ..io import atomic_dir, write_json, write_text
from .coco import load_coco, semantic_mask
from .palette import IGNORE, read_label_png, save_label_png
from .samples import BadSampleError, SampleGuard, check_image, check_label

log = logging.getLogger(__name__)
NUM_CLASSES = len(VOC_CLASSES)


def portable(path: Path) -> str:
    """Path relative to the working directory (the repo root in DVC stages) when inside it."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass
class Split:
    """Rows and per-class histograms of one processed split."""

    name: str
    tmp: Path      # where masks are written now
    final: Path    # where they will live (the paths the lists record)
    rows: list[dict[str, str]] = field(default_factory=list)
    hist: list[np.ndarray] = field(default_factory=list)

    def add(self, done: tuple) -> None:
        """List a converted sample: (id, image path, mask path in the output, histogram, sig)."""
        sample_id, image, mask, hist, sig = done
        self.rows.append({"id": sample_id, "image": portable(Path(image)),
                          "mask": portable(self.final / mask), "image_sig": sig})
        self.hist.append(hist)


# What the worker functions read: set in the parent before the pool forks.
_SHARED: dict[str, Any] = {}


def _convert(fn: Callable[[Any], tuple], items: list, workers: int, desc: str) -> Iterator[tuple]:
    """`fn` over `items` in order, in `workers` forked processes (or here when 1)."""
    with tqdm(total=len(items), desc=desc, unit="img") as bar:
        if workers <= 1 or len(items) < 2:
            for item in items:
                yield fn(item)
                bar.update()
            return
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for result in pool.imap(fn, items, chunksize=8):
                yield result
                bar.update()


def _written(sample_id: str, image: Path, mask: str, label: np.ndarray) -> tuple:
    """Write the label PNG under the temporary output; return what the split lists."""
    save_label_png(_SHARED["tmp"] / mask, label)
    st = image.stat()
    return ("ok", (sample_id, str(image), mask,
                   np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES],
                   f"{st.st_size}-{st.st_mtime_ns}"))


def _coco_one(image_id: int) -> tuple:
    coco, coco_root, split, ann_file, min_pixels = _SHARED["coco"]
    info = coco.loadImgs(image_id)[0]
    image = coco_root / f"{split}2017" / info["file_name"]
    try:
        check_image(image, (int(info["width"]), int(info["height"])))
        label = semantic_mask(coco, info, ann_file)
    except BadSampleError as exc:
        return ("bad", str(exc))
    if int(((label > 0) & (label != IGNORE)).sum()) < min_pixels:
        return ("dropped", None)
    stem = Path(info["file_name"]).stem
    return _written(stem, image, f"masks/coco_{split}/{stem}.png", label)


def process_coco(coco_root: Path, split: str, out: tuple[Path, Path], min_pixels: int,
                 guard: SampleGuard, workers: int = 1) -> tuple[Split, int]:
    """COCO `split` (train|val) -> masks; returns the split and the number of dropped images."""
    ann_file = coco_root / "annotations" / f"instances_{split}2017.json"
    coco = load_coco(ann_file, guard)
    result, dropped = Split(f"coco_{split}", *out), 0
    _SHARED.update(tmp=out[0], coco=(coco, coco_root, split, ann_file, min_pixels))
    for status, value in _convert(_coco_one, sorted(coco.getImgIds()), workers, f"coco {split}"):
        if status == "bad":
            guard(BadSampleError(value))
        elif status == "dropped":
            dropped += 1
        else:
            result.add(value)
    return result, dropped


def _read_list(path: Path, guard: SampleGuard) -> list[str]:
    """The ids of a split list file; duplicate ids are a bad sample (error, or dropped)."""
    if not path.is_file():
        raise MissingFileError(f"{path}: split list not found")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    unique = list(dict.fromkeys(ids))
    if len(unique) != len(ids):
        dups = sorted({i for i in ids if ids.count(i) > 1})
        guard(BadSampleError(f"{path}: duplicate ids {', '.join(dups[:5])}"
                             + (f" and {len(dups) - 5} more" if len(dups) > 5 else "")))
    return unique


def _sbd_label(mat_path: Path) -> np.ndarray:
    try:
        gt = scipy.io.loadmat(mat_path, squeeze_me=True, struct_as_record=False)["GTcls"]
        return np.asarray(gt.Segmentation, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - scipy raises assorted types for bad .mat files
        raise BadSampleError(f"{mat_path}: not an SBD GTcls .mat file ({exc})") from exc


def _labeled_one(sample: tuple[str, Path, Path]) -> tuple:
    """One VOC/SBD sample (id, image, label file) -> a checked mask in `masks/voc`."""
    sample_id, image, label_path = sample
    try:
        size = check_image(image)
        if not label_path.is_file():
            raise BadSampleError(f"{label_path}: mask file not found (listed id {sample_id})")
        if label_path.suffix == ".mat":
            label = _sbd_label(label_path)
        else:
            try:
                label = read_label_png(label_path)
            except ValueError as exc:
                raise BadSampleError(str(exc)) from exc
            except Exception as exc:  # noqa: BLE001
                raise BadSampleError(f"{label_path}: corrupt or unreadable mask ({exc})") from exc
        check_label(label, label_path, size, NUM_CLASSES)
    except BadSampleError as exc:
        return ("bad", str(exc))
    return _written(sample_id, image, f"masks/voc/{sample_id}.png", label)


def _add_labeled(split: Split, samples: Iterable[tuple[str, Path, Path]], guard: SampleGuard,
                 workers: int = 1) -> None:
    """VOC/SBD samples (id, image, label file) -> checked masks in `out/masks/voc`."""
    _SHARED["tmp"] = split.tmp
    for status, value in _convert(_labeled_one, list(samples), workers, split.name):
        if status == "bad":
            guard(BadSampleError(value))
        else:
            split.add(value)


def process_voc(voc_root: Path, sbd_root: Path | None, out: tuple[Path, Path], guard: SampleGuard,
                workers: int = 1) -> tuple[Split, Split, list[str]]:
    """VOC 2012 (+ SBD) -> train_aug (VOC train + SBD train/val, minus VOC val) and val.

    Also returns the ids of VOC train that are listed in val too: they are evaluated, never
    trained on.
    """
    lists = voc_root / "ImageSets" / "Segmentation"
    val_ids = _read_list(lists / "val.txt", guard)
    val_set = set(val_ids)
    listed_train = _read_list(lists / "train.txt", guard)
    overlap = [i for i in listed_train if i in val_set]
    if overlap:
        log.warning("%s: %d ids also in val.txt, removed from training: %s",
                    lists / "train.txt", len(overlap), ", ".join(overlap[:5]))
    train_ids = [i for i in listed_train if i not in val_set]

    def voc_sample(i: str) -> tuple[str, Path, Path]:
        return i, voc_root / "JPEGImages" / f"{i}.jpg", voc_root / "SegmentationClass" / f"{i}.png"

    val = Split("voc_val", *out)
    _add_labeled(val, map(voc_sample, val_ids), guard, workers)
    train = Split("voc_train_aug", *out)
    samples = [voc_sample(i) for i in train_ids]
    if sbd_root is not None:
        ds = sbd_root / "dataset"
        taken = set(val_ids) | set(train_ids)
        sbd_ids = _read_list(ds / "train.txt", guard) + _read_list(ds / "val.txt", guard)
        samples += [(i, ds / "img" / f"{i}.jpg", ds / "cls" / f"{i}.mat")
                    for i in dict.fromkeys(sbd_ids) if i not in taken]
    _add_labeled(train, samples, guard, workers)
    return train, val, overlap


def class_stats(splits: list[Split]) -> pd.DataFrame:
    """Pixels and images per class and split."""
    rows = []
    for split in splits:
        hist = np.stack(split.hist) if split.hist else np.zeros((0, NUM_CLASSES), dtype=np.int64)
        for c, name in enumerate(VOC_CLASSES):
            rows.append({"split": split.name, "class_id": c, "class": name,
                         "pixels": int(hist[:, c].sum()), "images": int((hist[:, c] > 0).sum())})
    return pd.DataFrame(rows)


def hard_images(split: Split, hard_classes: list[str]) -> list[str]:
    """Ids of the images that contain at least one of `hard_classes`."""
    ids = [VOC_CLASSES.index(c) for c in hard_classes]
    return [row["id"] for row, h in zip(split.rows, split.hist) if ids and h[ids].any()]


def preprocess(roots: dict[str, Any], out: Path, cfg: PreprocessConfig) -> dict[str, Any]:
    """Run the whole preprocessing into `out` (atomically); return the summary."""
    guard = SampleGuard(cfg.on_bad_sample)
    workers = cfg.workers or os.cpu_count() or 1
    with atomic_dir(out) as tmp:
        dirs = (tmp, out)
        coco_root = Path(roots["coco_root"])
        coco_train, dropped_train = process_coco(coco_root, "train", dirs, cfg.min_pixels, guard,
                                                 workers)
        coco_val, dropped_val = process_coco(coco_root, "val", dirs, cfg.min_pixels, guard,
                                             workers)
        sbd = Path(roots["sbd_root"]) if roots.get("sbd_root") else None
        train_aug, val, overlap = process_voc(Path(roots["voc_root"]), sbd, dirs, guard, workers)
        splits = [coco_train, coco_val, train_aug, val]
        for split in splits:
            if not split.rows:
                raise BadSampleError(f"split {split.name} has no usable samples")
            pd.DataFrame(split.rows).to_csv(tmp / f"{split.name}.csv", index=False)
        class_stats(splits).to_csv(tmp / "class_stats.csv", index=False)
        hard = hard_images(train_aug, cfg.hard_classes)
        write_text(tmp / "hard_images.txt", "".join(f"{i}\n" for i in hard))
        summary = {
            "samples": {s.name: len(s.rows) for s in splits},
            "dropped_min_pixels": {"coco_train": dropped_train, "coco_val": dropped_val},
            "skipped_bad_samples": len(guard.skipped), "skipped": guard.skipped[:100],
            "removed_train_in_val": len(overlap),
            "hard_images": len(hard),
        }
        write_json(tmp / "summary.json", summary)
    return summary
