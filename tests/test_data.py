"""Synthetic data in real formats, COCO masks vs pycocotools, VOC/SBD, bad inputs, augmentation."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from deeplab.data.classes import VOC_CLASSES, ClassList, voc_palette
from deeplab.data.dataset import IterationSampler, augment
from deeplab.config import PreprocessConfig, SyntheticData, load_params
from deeplab.data.palette import read_label_png, save_label_png
from deeplab.data.preprocess import preprocess
from deeplab.data.samples import BadSampleError
from deeplab.data.synthetic import COCO_IDS_OF_VOC, generate
from deeplab.errors import DeeplabError

CFG = SyntheticData(seed=3, image_size=48, coco_train_images=12, coco_val_images=4,
                    train_images=6, val_images=4, sbd_images=5)
PRE = PreprocessConfig(min_pixels=10, hard_classes=["bicycle", "chair", "diningtable", "pottedplant",
                                                   "sofa"], on_bad_sample="error", workers=1)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    generate(root, CFG)
    return root


def roots(raw):
    return {"coco_root": str(raw / "coco"), "root": str(raw / "VOC2012"), "sbd_root": str(raw / "SBD"),
            "layout": "voc", "classes": ClassList(VOC_CLASSES, voc_palette(21)).as_dict()}


# The paper's COCO -> VOC names, written out here independently of the package.
COCO_TO_VOC = {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa", "tv": "tvmonitor",
               "dining table": "diningtable", "potted plant": "pottedplant"}


def voc_id_of(coco):
    """COCO category id -> VOC id, by name."""
    return {c["id"]: VOC_CLASSES.index(COCO_TO_VOC.get(c["name"], c["name"]))
            for c in coco.dataset["categories"] if COCO_TO_VOC.get(c["name"], c["name"]) in VOC_CLASSES}


def independent_mask(coco, image_id, h, w):
    """The documented rules, computed directly with pycocotools."""
    voc_id = voc_id_of(coco)
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if a["category_id"] in voc_id]
    out = np.zeros((h, w), np.uint8)
    normal = sorted((a for a in anns if not a["iscrowd"]), key=lambda a: (-int(coco.annToMask(a).sum()), a["id"]))
    for a in normal:
        out[coco.annToMask(a) > 0] = voc_id[a["category_id"]]
    for a in anns:
        if a["iscrowd"]:
            out[coco.annToMask(a) > 0] = 255
    return out


def test_synthetic_formats(raw):
    data = json.loads((raw / "coco/annotations/instances_train2017.json").read_text())
    kinds = {type(a["segmentation"]).__name__ + ("-crowd" if a["iscrowd"] else "") for a in data["annotations"]}
    assert {"list", "dict-crowd"} <= kinds
    cats = {c["id"]: c["name"] for c in data["categories"]}
    assert set(COCO_IDS_OF_VOC) < set(cats) and len(cats) > 20
    assert cats[5] == "airplane" and cats[62] == "chair"  # COCO's own ids and names
    with Image.open(next((raw / "VOC2012/SegmentationClass").iterdir())) as m:
        assert m.mode == "P"
    assert (raw / "SBD/dataset/cls").is_dir()
    again = raw.parent / "again"
    generate(again, CFG)  # every byte depends on the settings only (no time stamps): a clone
    files = sorted(p.relative_to(raw) for p in raw.rglob("*") if p.is_file())  # regenerates
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())  # them
    assert all((raw / f).read_bytes() == (again / f).read_bytes() for f in files)  # bit for bit


def test_preprocess_matches_pycocotools(raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = preprocess(roots(raw), tmp_path / "processed", PRE)
    coco = COCO(str(raw / "coco/annotations/instances_train2017.json"))
    rows = pd.read_csv(tmp_path / "processed/coco_train.csv", dtype=str)
    assert len(rows) + summary["dropped_min_pixels"]["coco_train"] == CFG.coco_train_images
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
    assert len(train) == CFG.train_images + CFG.sbd_images
    stats = pd.read_csv(tmp_path / "processed/class_stats.csv")
    assert set(stats["split"]) == {"coco_train", "coco_val", "train", "val"}
    hard = (tmp_path / "processed/hard_images.txt").read_text().split()
    assert set(hard) <= set(train["id"])


def _copy(raw, tmp_path):
    dst = tmp_path / "raw"
    shutil.copytree(raw, dst)
    return dst


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "VOC2012/JPEGImages/2012_v00001.jpg").write_bytes(b"not a jpeg"), "corrupt or unreadable image"),
    (lambda r: Image.new("P", (10, 10)).save(r / "VOC2012/SegmentationClass/2012_v00001.png"), "mask is 10x10 but its image is 48x48"),
    (lambda r: save_label_png(r / "VOC2012/SegmentationClass/2012_v00001.png", np.full((48, 48), 30, np.uint8)), "label ids [30] outside"),
    (lambda r: (r / "VOC2012/SegmentationClass/2012_v00001.png").unlink(), "mask file not found"),
    (lambda r: (r / "coco/annotations/instances_val2017.json").write_text("{ broken"), "not valid JSON"),
])
def test_bad_input_is_named_and_nothing_is_written(raw, tmp_path, monkeypatch, breakage, message):
    monkeypatch.chdir(tmp_path)
    broken = _copy(raw, tmp_path)
    breakage(broken)
    out = tmp_path / "processed"
    with pytest.raises(BadSampleError, match=message.replace("[", r"\[").replace("]", r"\]")):
        preprocess(roots(broken), out, PRE)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".processed")]


def test_skip_policy_counts(raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    broken = _copy(raw, tmp_path)
    (broken / "VOC2012/JPEGImages/2012_v00001.jpg").write_bytes(b"junk")
    summary = preprocess(roots(broken), tmp_path / "processed", PRE.replace(on_bad_sample="skip"))
    assert summary["skipped_bad_samples"] == 1
    assert summary["samples"]["val"] == CFG.val_images - 1


def test_augment_pads_label_with_ignore():
    image = torch.full((3, 20, 20), 7, dtype=torch.uint8)
    label = torch.ones(20, 20, dtype=torch.int64)
    img, lab = augment(image, label, np.random.default_rng(0), crop=41, scale_range=(1.0, 1.0), flip=False)
    assert img.shape == (3, 41, 41) and lab.shape == (41, 41)
    assert (lab == 255).sum() == 41 * 41 - 400 and (lab == 1).sum() == 400
    assert set(img[0][lab == 255].unique().tolist()) == {124}


def test_sampler_is_a_pure_function_of_iteration():
    full = list(IterationSampler(10, 4, 6, seed=1))
    resumed = list(IterationSampler(10, 4, 6, seed=1, start=3))
    assert full[3:] == resumed
    ranks = [IterationSampler(10, 4, 6, seed=1, rank=r, world_size=2).batch(2) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(full[2])


def test_local_source_through_fetch_reproduces_masks(raw, tmp_path, monkeypatch, repo_root):
    """data.source=local: the user's own VOC/COCO/SBD directories, elsewhere on disk."""
    from deeplab.data.fetch import fetch

    user = tmp_path / "user"
    shutil.copytree(raw / "VOC2012", user / "VOCdevkit/VOC2012")
    shutil.copytree(raw / "coco", user / "datasets/coco")
    shutil.copytree(raw / "SBD", user / "benchmark_RELEASE")
    data = load_params(repo_root / "params.yaml").data.replace(
        source="local", voc_root=str(user / "VOCdevkit/VOC2012"),  # the older name of data.root
        coco_root=str(user / "datasets/coco"), sbd_root=str(user / "benchmark_RELEASE"))
    manifest = fetch(data, tmp_path / "data/raw")
    assert json.loads((tmp_path / "data/raw/manifest.json").read_text())["root"] == data.root
    monkeypatch.chdir(tmp_path)
    preprocess(manifest, tmp_path / "processed", PRE)
    coco = COCO(str(user / "datasets/coco/annotations/instances_val2017.json"))
    for _, row in pd.read_csv(tmp_path / "processed/coco_val.csv", dtype=str).iterrows():
        info = coco.loadImgs(int(row["id"]))[0]
        assert np.array_equal(read_label_png(row["mask"]),
                              independent_mask(coco, int(row["id"]), info["height"], info["width"]))
    val = pd.read_csv(tmp_path / "processed/val.csv", dtype=str)
    assert len(val) == CFG.val_images
    for _, row in val.iterrows():
        original = user / "VOCdevkit/VOC2012/SegmentationClass" / f"{row['id']}.png"
        assert np.array_equal(read_label_png(row["mask"]), read_label_png(original))

    with pytest.raises(FileNotFoundError, match="data.coco_root: .* lacks annotations/instances_train2017.json"):
        (user / "datasets/coco/annotations/instances_train2017.json").unlink()
        fetch(data, tmp_path / "data/raw2")
    with pytest.raises(DeeplabError, match="data.root: required when data.source is 'local'"):
        fetch(data.replace(root=None), tmp_path / "data/raw3")


def test_parallel_preprocessing_gives_identical_output(raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        preprocess(roots(raw), out, PRE.replace(workers=workers))
        outs.append({p.relative_to(out): p.read_bytes().replace(f"w{workers}/".encode(), b"OUT/")
                     for p in sorted(out.rglob("*")) if p.is_file()})
    assert outs[0].keys() == outs[1].keys() and len(outs[0]) > 20
    assert all(outs[0][k] == outs[1][k] for k in outs[0])
    listed = pd.read_csv(tmp_path / "w2/val.csv", dtype=str)
    image = raw / "VOC2012/JPEGImages" / f"{listed['id'][0]}.jpg"
    import hashlib
    assert listed["image_sig"][0] == hashlib.sha256(image.read_bytes()).hexdigest()[:20]  # content


def test_the_generator_colours_equal_the_hand_written_hsv_formula():
    """colorsys.hsv_to_rgb (the generator's) equals the formula it replaced, bit for bit."""
    from deeplab.data.synthetic import _hsv_to_rgb

    def formula(h, s, v):
        i = int(h * 6) % 6
        f = h * 6 - int(h * 6)
        p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
        return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])

    grid = np.random.default_rng(0).random((2000, 3))
    assert all(np.array_equal(_hsv_to_rgb(*hsv), formula(*hsv)) for hsv in grid)
