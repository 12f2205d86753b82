"""The fetch stage: local folders, downloads kept across source switches, content signatures."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.data import (
    VOC_CFG,
    VOC_PRE,
    independent_mask,
)
from helpers.repo import REPO
from helpers.web import serve
from pycocotools.coco import COCO

from deeplab.core.config import load_params
from deeplab.core.errors import (
    DeeplabError,
)
from deeplab.core.schema import SyntheticData
from deeplab.data.palette import read_label_png
from deeplab.prepare.preprocess import preprocess


def test_local_source_through_fetch_reproduces_masks(voc_raw, tmp_path, monkeypatch, repo_root):
    """data.source=local: the user's own VOC/COCO/SBD directories, elsewhere on disk."""
    from deeplab.prepare.fetch import fetch

    user = tmp_path / "user"
    shutil.copytree(voc_raw / "VOC2012", user / "VOCdevkit/VOC2012")
    shutil.copytree(voc_raw / "coco", user / "datasets/coco")
    shutil.copytree(voc_raw / "SBD", user / "benchmark_RELEASE")
    data = load_params(repo_root / "params.yaml").data.replace(
        source="local", voc_root=str(user / "VOCdevkit/VOC2012"),  # the older name of data.root
        coco_root=str(user / "datasets/coco"), sbd_root=str(user / "benchmark_RELEASE"))
    manifest = fetch(data, tmp_path / "data/raw")
    assert json.loads((tmp_path / "data/raw/manifest.json").read_text())["root"] == data.root
    monkeypatch.chdir(tmp_path)
    preprocess(manifest, tmp_path / "processed", VOC_PRE)
    coco = COCO(str(user / "datasets/coco/annotations/instances_val2017.json"))
    for _, row in pd.read_csv(tmp_path / "processed/coco_val.csv", dtype=str).iterrows():
        info = coco.loadImgs(int(row["id"]))[0]
        assert np.array_equal(read_label_png(row["mask"]),
                              independent_mask(coco, int(row["id"]), info["height"], info["width"]))
    val = pd.read_csv(tmp_path / "processed/val.csv", dtype=str)
    assert len(val) == VOC_CFG.val_images
    for _, row in val.iterrows():
        original = user / "VOCdevkit/VOC2012/SegmentationClass" / f"{row['id']}.png"
        assert np.array_equal(read_label_png(row["mask"]), read_label_png(original))

    with pytest.raises(FileNotFoundError, match="data.coco_root: .* lacks annotations/instances_train2017.json"):
        (user / "datasets/coco/annotations/instances_train2017.json").unlink()
        fetch(data, tmp_path / "data/raw2")
    with pytest.raises(DeeplabError, match="data.root: required when data.source is 'local'"):
        fetch(data.replace(root=None), tmp_path / "data/raw3")


def test_switching_source_keeps_downloads_and_local_changes_are_seen(tmp_path, monkeypatch):
    """download -> synthetic -> download: the archives and extracted datasets stay; with
    `local`, the manifest (a DVC output preprocess depends on) changes when a file does."""
    import hashlib
    import tarfile
    import zipfile

    from deeplab.prepare import fetch as fetch_mod
    from deeplab.prepare.synthetic import generate

    gen = tmp_path / "gen"
    generate(gen, SyntheticData(seed=0, image_size=40, coco_train_images=2, coco_val_images=1,
                               train_images=2, val_images=1, sbd_images=1))
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "voc.tar", "w") as tf:
        tf.add(gen / "VOC2012", "VOCdevkit/VOC2012")
    with tarfile.open(www / "sbd.tgz", "w:gz") as tf:
        tf.add(gen / "SBD", "benchmark_RELEASE")
    for name, sub in (("train.zip", "train2017"), ("val.zip", "val2017"), ("ann.zip", "annotations")):
        with zipfile.ZipFile(www / name, "w") as zf:
            for f in (gen / "coco" / sub).iterdir():
                zf.write(f, f"{sub}/{f.name}")
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in www.iterdir()}
    names = {"voc": "voc.tar", "sbd": "sbd.tgz", "coco_train": "train.zip", "coco_val": "val.zip",
             "coco_ann": "ann.zip"}
    catalogue = {k: (names[k], "unused", md5[names[k]], *v[3:]) for k, v in fetch_mod.SOURCES.items()}
    monkeypatch.setattr(fetch_mod, "SOURCES", catalogue)  # the catalogue of tiny archives
    monkeypatch.chdir(tmp_path)
    data = load_params(REPO / "params.yaml").data
    with serve(www) as url:
        downloaded = data.replace(source="download",
                                  download=data.download.replace(mirror=url, retries=0))
        first = fetch_mod.fetch(downloaded, Path("data/raw"))
        before = sorted(str(p) for p in Path("data/downloads").rglob("*"))
        assert (Path(first["root"]) / "JPEGImages").is_dir()
        fetch_mod.fetch(data.replace(source="synthetic"), Path("data/raw"))
        assert sorted(str(p) for p in Path("data/downloads").rglob("*")) == before
        assert (Path("data/downloads/archives") / "voc.tar").is_file()
        again = fetch_mod.fetch(downloaded, Path("data/raw"))
        assert again == first  # nothing downloaded or extracted again, same manifest

    user = {"source": "local", "root": str(gen / "VOC2012"), "coco_root": str(gen / "coco"),
            "sbd_root": None}
    one = fetch_mod.fetch(data.replace(**user), Path("data/raw"))
    manifest = Path("data/raw/manifest.json")
    mtime = manifest.stat().st_mtime_ns
    assert fetch_mod.fetch(data.replace(**user), Path("data/raw")) == one
    assert manifest.stat().st_mtime_ns == mtime  # unchanged data: not even rewritten
    mask = next((gen / "VOC2012" / "SegmentationClass").iterdir())
    os.utime(mask, ns=(1, 1))  # touched, same bytes: the content signature does not move
    assert fetch_mod.fetch(data.replace(**user), Path("data/raw"))["signature"] == one["signature"]
    mask.write_bytes(mask.read_bytes() + b"\0")  # an edited mask
    assert fetch_mod.fetch(data.replace(**user), Path("data/raw"))["signature"] != one["signature"]


def test_dangling_links_and_link_loops_under_a_local_root_are_named_and_skipped(tmp_path, caplog):
    from deeplab.prepare.signature import tree_signature

    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "JPEGImages" / "a.jpg").write_bytes(b"x")
    before = tree_signature([str(root)])
    (root / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (root / "loop").symlink_to(root / "loop")
    assert tree_signature([str(root)]) == before
    assert "dangling.png: skipped" in caplog.text and "loop: skipped" in caplog.text
