"""ADE20K (ADEChallengeData2016): `images/{training,validation}/*.jpg` and
`annotations/{training,validation}/*.png`, where 0 is "other/unlabeled" and 1..150 the
classes: 0 is ignored and k becomes class k-1 (`reduce_zero_label`)."""

from __future__ import annotations

from pathlib import Path

from ...data.classes import ADE20K_CLASSES
from ..samples import SampleGuard
from .common import Layout, LayoutOptions, TargetSplits, paired

ADE20K_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"


def ade20k_splits(root: Path, options: LayoutOptions, guard: SampleGuard) -> TargetSplits:
    return TargetSplits(*(paired(root / "images" / split, root / "annotations" / split, guard)
                          for split in ("training", "validation")))


ADE20K = Layout(
    "ade20k", (("images/training", "images/validation", "annotations/training",
                "annotations/validation"),), ade20k_splits,
    classes=lambda root, options: list(ADE20K_CLASSES), reduce_zero_label=True,
    download=f"data.source: download {ADE20K_URL}, unzip it, then set data.source: local and "
             f"data.root to the ADEChallengeData2016 folder")
