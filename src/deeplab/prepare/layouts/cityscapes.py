"""Cityscapes: `leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png` and
`gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png`; labelIds become the 19 trainIds by the
official table (cityscapesscripts)."""

from __future__ import annotations

from pathlib import Path

from ...core.errors import BadSampleError
from ...data.classes import cityscapes_classes, cityscapes_lookup
from ..samples import SampleGuard
from .common import Layout, LayoutOptions, Sample, TargetSplits


def cityscapes_splits(root: Path, options: LayoutOptions, guard: SampleGuard) -> TargetSplits:
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


CITYSCAPES = Layout(
    "cityscapes", (("leftImg8bit/train", "leftImg8bit/val", "gtFine/train", "gtFine/val"),),
    cityscapes_splits,
    classes=lambda root, options: cityscapes_classes()[0],
    colours=lambda n: cityscapes_classes()[1], fixed_classes=True, lookup=cityscapes_lookup,
    download="data.source: Cityscapes downloads need an account; download "
             "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip with cityscapesscripts' "
             "csDownload (or the website), then set data.source: local and data.root to the "
             "folder holding leftImg8bit/ and gtFine/")
