"""Datasets crafted to harm (docs/safety.md, round four): a path read from a dataset file that
leads out of its folder, segmentations that crash pycocotools' C code, a file name that is not
UTF-8, an unlabeled pool that is the repository itself. Each is one line naming the entry, and
nothing outside the output folder is written."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.data import CRACKS, OWN_PRE, data_config
from PIL import Image
from pycocotools import mask as mask_utils

from deeplab.core.errors import BadSampleError, ConfigError
from deeplab.core.schema import PreprocessConfig
from deeplab.prepare.coco import load_coco, rle_counts, semantic_mask
from deeplab.prepare.fetch import fetch
from deeplab.prepare.pool import pool_list
from deeplab.prepare.preprocess import preprocess

# A valid compressed RLE of a 20x20 mask: claimed for a 20x16 image its runs overrun the buffer.
OVERRUN = mask_utils.encode(np.asfortranarray(np.eye(20, dtype=np.uint8)))["counts"].decode()
SKIP = PreprocessConfig(min_pixels=0, hard_classes=None, on_bad_sample="skip", workers=1)


def _coco_export(tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    """A Roboflow COCO export of the generator at `tmp_path/a/export` and its train JSON."""
    monkeypatch.chdir(tmp_path)
    manifest = fetch(data_config(layout="coco", classes=CRACKS), tmp_path / "raw")
    mine = tmp_path / "a" / "export"
    shutil.copytree(manifest["root"], mine)
    return mine, json.loads((mine / "train/_annotations.coco.json").read_text())


def test_a_coco_file_name_leading_out_of_the_export_is_refused_and_the_users_file_is_kept(
        tmp_path, monkeypatch):
    mine, data = _coco_export(tmp_path, monkeypatch)
    first = data["images"][0]
    victim = tmp_path / "victim" / "v.png"  # the user's file; the crafted name points at it,
    victim.parent.mkdir()                    # and the mask's path would have landed on it too
    shutil.copy(mine / "train" / first["file_name"], victim)
    before = victim.read_bytes()
    first["file_name"] = "../../../victim/v.png"
    (mine / "train/_annotations.coco.json").write_text(json.dumps(data))
    local = fetch(data_config(layout="coco", source="local", root=str(mine)), tmp_path / "raw_l")
    with pytest.raises(BadSampleError, match=r"'\.\./\.\./\.\./victim/v\.png' is not a path below"):
        preprocess(local, tmp_path / "out", OWN_PRE)
    assert victim.read_bytes() == before and not (tmp_path / "out").exists()
    # on_bad_sample: skip drops that entry alone, and still writes nothing outside
    summary = preprocess(local, tmp_path / "out", SKIP)
    assert summary["skipped_bad_samples"] == 1 and victim.read_bytes() == before
    written = {p.resolve() for p in (tmp_path / "out").rglob("*")}
    assert all(p.is_relative_to((tmp_path / "out").resolve()) for p in written)


@pytest.mark.parametrize("entry", ["../../../victim/v", "/etc/passwd", "a/../../x"])
def test_a_voc_split_list_id_leading_out_of_the_dataset_is_refused(tmp_path, voc_raw, entry):
    from deeplab.prepare.layouts import LayoutOptions, target_splits
    from deeplab.prepare.samples import SampleGuard

    root = tmp_path / "VOC2012"
    shutil.copytree(voc_raw / "VOC2012", root)
    lists = root / "ImageSets/Segmentation"
    (lists / "val.txt").write_text((lists / "val.txt").read_text() + entry + "\n")
    with pytest.raises(BadSampleError, match=f"val.txt: entry '{entry}' is not a path below"):
        target_splits("voc", root, LayoutOptions(), SampleGuard("error"))
    guard = SampleGuard("skip")
    splits = target_splits("voc", root, LayoutOptions(), guard)
    assert len(guard.skipped) == 1 and all(".." not in s.id for s in splits.val)


def _one_image_coco(tmp_path: Path, segmentation, w: int = 20, h: int = 16):
    data = {"images": [{"id": 1, "file_name": "a.png", "width": w, "height": h}],
            "categories": [{"id": 1, "name": "crack"}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": segmentation, "area": 1.0, "bbox": [0, 0, 1, 1]}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    coco = load_coco(path)
    return lambda: semantic_mask(coco, coco.loadImgs(1)[0], path, {1: 1}, 0)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


@pytest.mark.parametrize("segmentation, says", [
    ([[0, 0, float("nan"), 1, 5, 5]], "not a finite number"),    # segfaulted pycocotools
    ([[0, 0, float("inf"), 1, 5, 5]], "not a finite number"),
    ([[0, 0, 1e12, 3, 5, 9]], "more than one image size outside"),  # silently empty before
    ([[0, 0, 4, 0, 4]], "not a list of x, y pairs"),
    ({"size": [90000, 90000], "counts": "PPYo1"}, "an RLE of size 90000x90000 for a 20x16"),
    ({"size": [16, 20], "counts": [300, 40]}, "cover 340 pixels, not the image's 320"),
    ({"size": [16, 20], "counts": OVERRUN}, "cover 400 pixels, not the image's 320"),
    ("crack", "a segmentation of type str"),
])
def test_segmentations_that_crash_or_blow_up_pycocotools_are_one_line(tmp_path, segmentation, says):
    paint = _one_image_coco(tmp_path, segmentation)
    with pytest.raises(BadSampleError, match=f"annotation 7 of image 1 has .*{says}"):
        paint()


def test_checked_segmentations_paint_as_pycocotools_does(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.random((16, 20)) < 0.3
    assert np.array_equal(_one_image_coco(tmp_path, _rle(mask))(), mask.astype(np.uint8))
    for m in (mask, ~mask, np.ones_like(mask), rng.random((31, 7)) < 0.5):
        runs, value, count = [], False, 0  # COCO's runs written out directly: zeros first
        for v in m.ravel(order="F"):
            if v != value:
                runs.append(count)
                value, count = v, 0
            count += 1
        runs.append(count)
        assert rle_counts(_rle(m)["counts"]) == runs
    # a polygon of fewer than 3 points (COCO 2017 has some) covers no pixel: left out
    poly = [2, 2, 15, 2, 15, 12, 2, 12]
    want = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], 16, 20)))
    got = _one_image_coco(tmp_path, [poly, [1, 1, 3, 3]])()
    assert np.array_equal(got, want) and want.sum() > 50


def test_a_pool_file_name_that_is_not_utf8_is_skipped_with_a_line(tmp_path, caplog):
    pool = tmp_path / "pool"
    pool.mkdir()
    Image.new("RGB", (8, 8)).save(pool / "fine.png")
    shutil.copy(pool / "fine.png", os.fsdecode(bytes(pool) + b"/caf\xe9.png"))
    listed = pool_list(pool)
    assert [Path(p).name for p in listed["image"]] == ["fine.png"]
    assert "caf\\udce9.png'" in caplog.text and "not UTF-8" in caplog.text
    listed.to_csv(tmp_path / "pool.csv", index=False)  # what crashed fetch (pyarrow strings)


def test_an_unlabeled_pool_inside_what_the_pipeline_writes_is_refused(tmp_path, monkeypatch):
    from deeplab.prepare.fetch import pool_root

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    (tmp_path / "photos").mkdir()
    (tmp_path / "reports").mkdir()
    for bad, part in ((".", "data"), ("reports", "reports"), ("data/raw/synthetic", "data")):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ConfigError, match=f"data.unlabeled_root: {bad} .*repository's {part}"):
            pool_root(data_config(unlabeled_root=bad), tmp_path / "data/raw")
    assert pool_root(data_config(unlabeled_root="photos"), tmp_path / "data/raw") == "photos"
