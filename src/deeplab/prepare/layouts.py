"""The target dataset's layouts: which image goes with which label file, per split.

- `voc`: `JPEGImages/<id>.<jpg|png|...>`, `SegmentationClass/<id>.png`, split lists in
  `ImageSets/Segmentation/{train,val}.txt`; optional SBD (`dataset/{img,cls}`, `.mat`) joins
  the training split (VOC train + SBD train/val, minus VOC val: `train_aug`).
- `folder`: `images/{train,val}/<stem>.<ext>` and `masks/{train,val}/<stem>.png` (subfolders
  allowed; the stem is the path below the split folder).
- `cityscapes`: `leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png` and
  `gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import BadSampleError, MissingFileError
from .samples import SampleGuard

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
REQUIRED = {  # what a local root of each layout must hold
    "voc": ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"],
    "folder": ["images/train", "images/val", "masks/train", "masks/val"],
    "cityscapes": ["leftImg8bit/train", "leftImg8bit/val", "gtFine/train", "gtFine/val"],
}


@dataclass(frozen=True)
class Sample:
    """One image and its label file; `kind` says how to read the label (png | mat | labelids)."""

    id: str
    image: Path
    label: Path
    kind: str = "png"


@dataclass
class TargetSplits:
    train: list[Sample]
    val: list[Sample]
    removed_train_in_val: int = 0


def _examples(values: list) -> str:
    return ", ".join(map(str, values[:5])) + (f" and {len(values) - 5} more" if len(values) > 5 else "")


def read_id_list(path: Path, guard: SampleGuard) -> list[str]:
    """The ids of a split list file; duplicate ids are a bad sample (error, or dropped)."""
    if not path.is_file():
        raise MissingFileError(f"{path}: split list not found")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    unique = list(dict.fromkeys(ids))
    if len(unique) != len(ids):
        dups = sorted({i for i in ids if ids.count(i) > 1})
        guard(BadSampleError(f"{path}: duplicate ids {_examples(dups)}"))
    return unique


def _image_of(folder: Path, stem: str) -> Path:
    """`folder/<stem>.<ext>` for the first image suffix that exists (default `.jpg`)."""
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return folder / f"{stem}.jpg"


def voc_splits(root: Path, sbd_root: Path | None, guard: SampleGuard) -> TargetSplits:
    """VOC 2012 (+ SBD) -> train_aug and val. Ids of VOC train also listed in val are
    evaluated, never trained on."""
    lists = root / "ImageSets" / "Segmentation"
    val_ids = read_id_list(lists / "val.txt", guard)
    val_set = set(val_ids)
    listed_train = read_id_list(lists / "train.txt", guard)
    overlap = [i for i in listed_train if i in val_set]
    if overlap:
        log.warning("%s: %d ids also in val.txt, removed from training: %s",
                    lists / "train.txt", len(overlap), _examples(overlap))
    train_ids = [i for i in listed_train if i not in val_set]

    def sample(i: str) -> Sample:
        return Sample(i, _image_of(root / "JPEGImages", i), root / "SegmentationClass" / f"{i}.png")

    train = [sample(i) for i in train_ids]
    if sbd_root is not None:
        ds = sbd_root / "dataset"
        taken = val_set | set(train_ids)
        sbd_ids = read_id_list(ds / "train.txt", guard) + read_id_list(ds / "val.txt", guard)
        train += [Sample(i, ds / "img" / f"{i}.jpg", ds / "cls" / f"{i}.mat", "mat")
                  for i in dict.fromkeys(sbd_ids) if i not in taken]
    return TargetSplits(train, [sample(i) for i in val_ids], len(overlap))


def _files_by_stem(folder: Path, suffixes: tuple[str, ...], guard: SampleGuard) -> dict[str, Path]:
    """{path below `folder` without suffix: file} for files with one of `suffixes`."""
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() not in suffixes or path.name.startswith("."):
            continue
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if stem in found:
            guard(BadSampleError(f"{folder}: two files for one sample: {found[stem].name} and "
                                 f"{path.name}; keep one"))
            continue
        found[stem] = path
    return found


def folder_splits(root: Path, guard: SampleGuard) -> TargetSplits:
    """`images/{train,val}` paired with `masks/{train,val}` by their stems."""
    splits = {}
    for split in ("train", "val"):
        images = _files_by_stem(root / "images" / split, IMAGE_SUFFIXES, guard)
        masks = _files_by_stem(root / "masks" / split, (".png",), guard)
        lonely = [str(images[s]) for s in images if s not in masks]
        if lonely:
            guard(BadSampleError(f"{len(lonely)} image(s) without a mask in "
                                 f"{root / 'masks' / split}: {_examples(lonely)}"))
        orphans = [str(masks[s]) for s in masks if s not in images]
        if orphans:
            guard(BadSampleError(f"{len(orphans)} mask(s) without an image in "
                                 f"{root / 'images' / split}: {_examples(orphans)}"))
        splits[split] = [Sample(s, images[s], masks[s]) for s in images if s in masks]
    return TargetSplits(splits["train"], splits["val"])


def cityscapes_splits(root: Path, guard: SampleGuard) -> TargetSplits:
    """`leftImg8bit/{train,val}/<city>/*_leftImg8bit.png` with their `gtFine` labelIds."""
    splits = {}
    for split in ("train", "val"):
        images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        samples = []
        for image in images:
            name = image.name.removesuffix("_leftImg8bit.png")
            label = root / "gtFine" / split / image.parent.name / f"{name}_gtFine_labelIds.png"
            if not label.is_file():
                guard(BadSampleError(f"{image}: no labelIds file ({label})"))
                continue
            samples.append(Sample(name, image, label, "labelids"))
        splits[split] = samples
    return TargetSplits(splits["train"], splits["val"])


def target_splits(layout: str, root: Path, sbd_root: Path | None, guard: SampleGuard) -> TargetSplits:
    """The train and val samples of the target dataset in `layout`."""
    if layout == "voc":
        return voc_splits(root, sbd_root, guard)
    if layout == "folder":
        return folder_splits(root, guard)
    return cityscapes_splits(root, guard)
