"""COCO categories map to the dataset's classes by name (or data.coco_map)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.data import (
    CRACKS,
    OWN_PRE,
    data_config,
    processed,
)

from deeplab.core.errors import ConfigError
from deeplab.data.classes import ClassList
from deeplab.data.palette import read_label_png
from deeplab.prepare.fetch import fetch
from deeplab.prepare.preprocess import preprocess


def test_coco_categories_map_by_name_not_id(tmp_path, monkeypatch):
    """The workaround that once turned 'crack' (COCO id 1) into VOC's person: now by name."""
    out, manifest = processed(tmp_path, monkeypatch, layout="folder", classes=CRACKS)
    ann = json.loads((Path(manifest["coco_root"]) / "annotations/instances_val2017.json").read_text())
    names = {c["id"]: c["name"] for c in ann["categories"]}
    assert names[1] == "crack" and names[2] == "rust"
    from pycocotools.coco import COCO
    coco = COCO(str(Path(manifest["coco_root"]) / "annotations/instances_val2017.json"))
    for _, row in pd.read_csv(out / "coco_val.csv", dtype=str).iterrows():
        got = read_label_png(row["mask"])
        want = np.zeros_like(got)
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=int(row["id"])))
                if names[a["category_id"]] in CRACKS]
        for a in sorted((a for a in anns if not a["iscrowd"]),
                        key=lambda a: (-int(coco.annToMask(a).sum()), a["id"])):
            want[coco.annToMask(a) > 0] = CRACKS.index(names[a["category_id"]])
        for a in anns:
            if a["iscrowd"]:
                want[coco.annToMask(a) > 0] = 255
        assert np.array_equal(got, want)

    # An explicit map: the clutter category 'cup' counts as rust, 'crack' stays unmapped.
    preprocess({**manifest, "coco_map": {"cup": "rust"}}, tmp_path / "mapped", OWN_PRE)
    stats = pd.read_csv(tmp_path / "mapped/class_stats.csv")
    coco_stats = stats[stats["split"] == "coco_train"].set_index("class")
    assert coco_stats.loc["crack", "pixels"] == 0 and coco_stats.loc["rust", "pixels"] > 0

    # A VOC class list and this COCO: nothing maps, which is an error, not 21 wrong classes.
    with pytest.raises(ConfigError, match="no COCO category maps to a class of the dataset"):
        preprocess({**manifest, "classes": ClassList.default(21).as_dict()}, tmp_path / "voc", OWN_PRE)


@pytest.mark.parametrize("coco_map, message", [
    ({"crack": "corrosion"}, "data.coco_map: 'corrosion' is not a class of the dataset"),
    ({"crak": "crack"}, "data.coco_map: 'crak' is not a category of"),
])
def test_a_coco_map_naming_what_does_not_exist_is_refused(tmp_path, monkeypatch, coco_map, message):
    monkeypatch.chdir(tmp_path)
    manifest = fetch(data_config(layout="folder", classes=CRACKS), tmp_path / "raw")
    with pytest.raises(ConfigError, match=message):
        preprocess({**manifest, "coco_map": coco_map}, tmp_path / "p", OWN_PRE)
    assert not (tmp_path / "p").exists()
