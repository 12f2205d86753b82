"""PASCAL VOC 2012: `JPEGImages/<id>.<jpg|png|...>`, `SegmentationClass/<id>.png`, split lists
in `ImageSets/Segmentation/{train,val}.txt`; optional SBD (`dataset/{img,cls}`, `.mat`) joins
the training split (VOC train + SBD train/val, minus VOC val: `train_aug`)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..samples import SampleGuard
from .common import (
    Layout,
    LayoutOptions,
    Sample,
    TargetSplits,
    examples,
    image_of,
    read_id_list,
)

log = logging.getLogger(__name__)


def voc_splits(root: Path, options: LayoutOptions, guard: SampleGuard) -> TargetSplits:
    """VOC 2012 (+ SBD) -> train_aug and val. Ids of VOC train also listed in val are
    evaluated, never trained on."""
    lists = root / "ImageSets" / "Segmentation"
    val_ids = read_id_list(lists / "val.txt", guard)
    val_set = set(val_ids)
    listed_train = read_id_list(lists / "train.txt", guard)
    overlap = [i for i in listed_train if i in val_set]
    if overlap:
        log.warning("%s: %d ids also in val.txt, removed from training: %s",
                    lists / "train.txt", len(overlap), examples(overlap))
    train_ids = [i for i in listed_train if i not in val_set]

    def sample(i: str) -> Sample:
        return Sample(i, image_of(root / "JPEGImages", i), root / "SegmentationClass" / f"{i}.png")

    train = [sample(i) for i in train_ids]
    if options.sbd_root is not None:
        ds = options.sbd_root / "dataset"
        taken = val_set | set(train_ids)
        sbd_ids = read_id_list(ds / "train.txt", guard) + read_id_list(ds / "val.txt", guard)
        train += [Sample(i, ds / "img" / f"{i}.jpg", ds / "cls" / f"{i}.mat", "mat")
                  for i in dict.fromkeys(sbd_ids) if i not in taken]
    return TargetSplits(train, [sample(i) for i in val_ids], len(overlap))


VOC = Layout("voc", (("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"),), voc_splits)
