"""The synthetic generator: real formats, bytes that depend on the settings only."""

import json

from helpers.data import (
    VOC_CFG,
)
from PIL import Image

from deeplab.prepare.synthetic import COCO_IDS_OF_VOC, generate


def test_synthetic_formats(voc_raw):
    data = json.loads((voc_raw / "coco/annotations/instances_train2017.json").read_text())
    kinds = {type(a["segmentation"]).__name__ + ("-crowd" if a["iscrowd"] else "") for a in data["annotations"]}
    assert {"list", "dict-crowd"} <= kinds
    cats = {c["id"]: c["name"] for c in data["categories"]}
    assert set(COCO_IDS_OF_VOC) < set(cats) and len(cats) > 20
    assert cats[5] == "airplane" and cats[62] == "chair"  # COCO's own ids and names
    with Image.open(next((voc_raw / "VOC2012/SegmentationClass").iterdir())) as m:
        assert m.mode == "P"
    assert (voc_raw / "SBD/dataset/cls").is_dir()
    again = voc_raw.parent / "again"
    generate(again, VOC_CFG)  # every byte depends on the settings only (no time stamps): a clone
    files = sorted(p.relative_to(voc_raw) for p in voc_raw.rglob("*") if p.is_file())  # regenerates
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())  # them
    assert all((voc_raw / f).read_bytes() == (again / f).read_bytes() for f in files)  # bit for bit
