"""Preprocessing: COCO masks against pycocotools, bad samples named, skip policy, workers."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers.data import (
    VOC_CFG,
    VOC_PRE,
    independent_mask,
    voc_id_of,
    voc_manifest,
)
from PIL import Image
from pycocotools.coco import COCO

from deeplab.core.schema import PreprocessConfig, SyntheticData
from deeplab.data.palette import read_label_png, save_label_png
from deeplab.prepare.preprocess import preprocess
from deeplab.prepare.samples import BadSampleError


def _copy(voc_raw, tmp_path):
    dst = tmp_path / "raw"
    shutil.copytree(voc_raw, dst)
    return dst









def test_preprocess_matches_pycocotools(voc_raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = preprocess(voc_manifest(voc_raw), tmp_path / "processed", VOC_PRE)
    coco = COCO(str(voc_raw / "coco/annotations/instances_train2017.json"))
    rows = pd.read_csv(tmp_path / "processed/coco_train.csv", dtype=str)
    assert len(rows) + summary["dropped_min_pixels"]["coco_train"] == VOC_CFG.coco_train_images
    saw_crowd = False
    for _, row in rows.iterrows():
        image_id = int(row["id"])
        info = coco.loadImgs(image_id)[0]
        got = read_label_png(row["mask"])
        want = independent_mask(coco, image_id, info["height"], info["width"])
        assert np.array_equal(got, want), row["id"]
        saw_crowd |= (got == 255).any()
    assert len(voc_id_of(coco)) == 20  # all twenty by name, six of them through synonyms
    train = pd.read_csv(tmp_path / "processed/train.csv", dtype=str)
    assert len(train) == VOC_CFG.train_images + VOC_CFG.sbd_images
    stats = pd.read_csv(tmp_path / "processed/class_stats.csv")
    assert set(stats["split"]) == {"coco_train", "coco_val", "train", "val"}
    hard = (tmp_path / "processed/hard_images.txt").read_text().split()
    assert set(hard) <= set(train["id"])


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "VOC2012/JPEGImages/2012_v00001.jpg").write_bytes(b"not a jpeg"), "corrupt or unreadable image"),
    (lambda r: Image.new("P", (10, 10)).save(r / "VOC2012/SegmentationClass/2012_v00001.png"), "mask is 10x10 but its image is 48x48"),
    (lambda r: save_label_png(r / "VOC2012/SegmentationClass/2012_v00001.png", np.full((48, 48), 30, np.uint8)), "label ids [30] outside"),
    (lambda r: (r / "VOC2012/SegmentationClass/2012_v00001.png").unlink(), "mask file not found"),
    (lambda r: (r / "coco/annotations/instances_val2017.json").write_text("{ broken"), "not valid JSON"),
])
def test_bad_input_is_named_and_nothing_is_written(voc_raw, tmp_path, monkeypatch, breakage, message):
    monkeypatch.chdir(tmp_path)
    broken = _copy(voc_raw, tmp_path)
    breakage(broken)
    out = tmp_path / "processed"
    with pytest.raises(BadSampleError, match=message.replace("[", r"\[").replace("]", r"\]")):
        preprocess(voc_manifest(broken), out, VOC_PRE)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".processed")]


def test_skip_policy_counts(voc_raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    broken = _copy(voc_raw, tmp_path)
    (broken / "VOC2012/JPEGImages/2012_v00001.jpg").write_bytes(b"junk")
    summary = preprocess(voc_manifest(broken), tmp_path / "processed", VOC_PRE.replace(on_bad_sample="skip"))
    assert summary["skipped_bad_samples"] == 1
    assert summary["samples"]["val"] == VOC_CFG.val_images - 1


def test_parallel_preprocessing_gives_identical_output(voc_raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        preprocess(voc_manifest(voc_raw), out, VOC_PRE.replace(workers=workers))
        outs.append({p.relative_to(out): p.read_bytes().replace(f",w{workers}/".encode(), b",OUT/")
                     for p in sorted(out.rglob("*")) if p.is_file()})
    assert outs[0].keys() == outs[1].keys() and len(outs[0]) > 20
    assert [k for k in outs[0] if outs[0][k] != outs[1][k]] == []
    listed = pd.read_csv(tmp_path / "w2/val.csv", dtype=str)
    image = voc_raw / "VOC2012/JPEGImages" / f"{listed['id'][0]}.jpg"
    import hashlib
    assert listed["image_sig"][0] == hashlib.sha256(image.read_bytes()).hexdigest()[:20]  # content


def test_voc_ids_in_train_and_val_duplicates_and_bad_coco_references(tmp_path, monkeypatch):
    import pandas as pd

    from deeplab.prepare.preprocess import preprocess
    from deeplab.prepare.samples import BadSampleError
    from deeplab.prepare.synthetic import generate

    voc_raw = tmp_path / "raw"
    generate(voc_raw, SyntheticData(seed=0, image_size=40, coco_train_images=3, coco_val_images=2,
                               train_images=4, val_images=2, sbd_images=0))
    monkeypatch.chdir(tmp_path)
    from deeplab.data.classes import ClassList
    roots = {"coco_root": str(voc_raw / "coco"), "root": str(voc_raw / "VOC2012"), "sbd_root": None,
             "layout": "voc", "classes": ClassList.default(21).as_dict()}
    cfg = PreprocessConfig(min_pixels=0, hard_classes=[], on_bad_sample="error", workers=1)
    lists = voc_raw / "VOC2012/ImageSets/Segmentation"
    val_id = lists.joinpath("val.txt").read_text().split()[0]
    lists.joinpath("train.txt").write_text(lists.joinpath("train.txt").read_text() + f"{val_id}\n")
    summary = preprocess(roots, tmp_path / "p1", cfg)
    train_ids = pd.read_csv(tmp_path / "p1/train.csv", dtype=str)["id"].tolist()
    assert val_id not in train_ids and len(train_ids) == 4 and summary["removed_train_in_val"] == 1

    first = lists.joinpath("train.txt").read_text().split()[0]
    lists.joinpath("train.txt").write_text(lists.joinpath("train.txt").read_text() + f"{first}\n")
    with pytest.raises(BadSampleError, match=rf"train.txt: duplicate ids {first}"):
        preprocess(roots, tmp_path / "p2", cfg)
    skipped = preprocess(roots, tmp_path / "p3", cfg.replace(on_bad_sample="skip"))
    assert skipped["skipped_bad_samples"] == 1 and len(pd.read_csv(tmp_path / "p3/train.csv")) == 4

    ann_file = voc_raw / "coco/annotations/instances_val2017.json"
    data = json.loads(ann_file.read_text())
    good = json.dumps(data)
    data["annotations"].append({**data["annotations"][0], "id": 999001, "image_id": 424242})
    ann_file.write_text(json.dumps(data))
    with pytest.raises(BadSampleError, match=r"1 annotations of missing images: 999001 \(image 424242\)"):
        preprocess(roots, tmp_path / "p4", cfg)
    data = json.loads(good)
    data["annotations"].append({**data["annotations"][0], "id": 999002, "category_id": 4242})
    data["images"].append(data["images"][0])
    ann_file.write_text(json.dumps(data))
    with pytest.raises(BadSampleError, match="duplicate image ids"):
        preprocess(roots, tmp_path / "p5", cfg)
    skipped = preprocess(roots, tmp_path / "p6", cfg.replace(on_bad_sample="skip"))
    assert skipped["skipped_bad_samples"] == 3  # duplicate image, unknown category, train dup
    assert any("unknown category ids: 999002 (category 4242)" in s for s in skipped["skipped"])
    assert not (tmp_path / "p4").exists() and not (tmp_path / "p5").exists()
