"""The synthetic generator: real formats, bytes that depend on the settings only."""

import json

import numpy as np
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


def test_the_generator_colours_equal_the_hand_written_hsv_formula():
    """colorsys.hsv_to_rgb (the generator's) equals the formula it replaced, bit for bit."""
    from deeplab.prepare.synthetic import _hsv_to_rgb

    def formula(h, s, v):
        i = int(h * 6) % 6
        f = h * 6 - int(h * 6)
        p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
        return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])

    grid = np.random.default_rng(0).random((2000, 3))
    assert all(np.array_equal(_hsv_to_rgb(*hsv), formula(*hsv)) for hsv in grid)
