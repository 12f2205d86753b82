"""A folder of your own: `images/{train,val}/<stem>.<ext>` and `masks/{train,val}/<stem>.png`
(subfolders allowed; the stem is the path below the split folder)."""

from __future__ import annotations

from pathlib import Path

from ..samples import SampleGuard
from .common import Layout, LayoutOptions, TargetSplits, paired


def folder_splits(root: Path, options: LayoutOptions, guard: SampleGuard) -> TargetSplits:
    """`images/{train,val}` paired with `masks/{train,val}` by their stems."""
    return TargetSplits(*(paired(root / "images" / split, root / "masks" / split, guard)
                          for split in ("train", "val")))


FOLDER = Layout("folder", (("images/train", "images/val", "masks/train", "masks/val"),),
                folder_splits,
                download="data.source: download fetches the public VOC/COCO archives; a folder "
                         "dataset is your own: set data.source: local and data.root")
