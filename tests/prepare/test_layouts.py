"""Your own data: the folder, VOC and Cityscapes layouts, any class list, one line per mistake."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.data import (
    CRACKS,
    OWN_CFG,
    OWN_PRE,
    absolute,
    data_config,
    processed,
    tiny_training,
)
from PIL import Image

from deeplab.core.errors import BadSampleError, ConfigError
from deeplab.data.palette import colour_table, read_label_png, save_label_png
from deeplab.prepare.fetch import fetch
from deeplab.prepare.layouts import resolve_classes
from deeplab.prepare.preprocess import preprocess


def _folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = fetch(data_config(layout="folder", classes=CRACKS), tmp_path / "raw")
    local = tmp_path / "mine"
    shutil.copytree(manifest["root"], local)
    return local, {**manifest, "root": str(local), "coco_root": None}













def test_cityscapes_label_ids_become_train_ids_as_the_official_table_says(tmp_path, monkeypatch):
    from cityscapesscripts.helpers.labels import id2label, labels

    out, manifest = processed(tmp_path, monkeypatch, layout="cityscapes")
    names = [label.name for label in sorted((l for l in labels if 0 <= l.trainId < 255),
                                            key=lambda l: l.trainId)]
    assert manifest["classes"]["names"] == list(dict.fromkeys(names))[:19]
    assert manifest["classes"]["names"][6] == "traffic light"
    rows = pd.concat([pd.read_csv(out / "train.csv", dtype=str), pd.read_csv(out / "val.csv", dtype=str)])
    root = Path(manifest["root"])
    seen_void = False
    for _, row in rows.iterrows():
        label_ids = np.array(Image.open(next(root.glob(f"gtFine/*/*/{row['id']}_gtFine_labelIds.png"))))
        expected = np.vectorize(lambda i: id2label[int(i)].trainId if id2label[int(i)].trainId
                                not in (255, -1) else 255)(label_ids).astype(np.uint8)
        assert np.array_equal(read_label_png(row["mask"]), expected), row["id"]
        seen_void |= bool(np.isin(label_ids, [0, 4]).any())
    assert seen_void  # unlabeled and void ids were exercised

    # ... and it trains.
    from deeplab.engine.stage import FINETUNE, StageFiles, run_training_stage

    params = tiny_training(tmp_path, monkeypatch)
    files = StageFiles(absolute(out / "train.csv", tmp_path), absolute(out / "val.csv", tmp_path),
                       out / "classes.json", tmp_path / "m.pt", tmp_path / "c.ckpt", tmp_path / "reports")
    metrics = run_training_stage(FINETUNE, params.replace(finetune=params.finetune.replace(
        init="scratch")), files)
    assert metrics["iterations"] == 2
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["config"]["num_classes"] == 19 and state["classes"]["names"][0] == "road"
    assert state["classes"]["palette"][0] == [128, 64, 128]  # Cityscapes' own colours


def test_folder_layout_masks_of_every_kind_and_its_own_ignore_value(tmp_path, monkeypatch):
    out, manifest = processed(tmp_path, monkeypatch, layout="folder", classes=CRACKS, ignore_index=7)
    root = Path(manifest["root"])
    images = sorted((root / "images/train").iterdir())
    assert {p.suffix for p in images} == {".jpg", ".png"}
    modes = set()
    for _, row in pd.read_csv(out / "train.csv", dtype=str).iterrows():
        with Image.open(root / "masks/train" / f"{row['id']}.png") as m:
            modes.add(m.mode)
            raw = np.array(m)
        want = np.where(raw == 7, 255, raw)
        assert np.array_equal(read_label_png(row["mask"]), want)
    assert modes == {"L", "P"}
    stats = pd.read_csv(out / "class_stats.csv")
    assert stats[stats["split"] == "train"]["class"].tolist() == CRACKS

    # An RGB colour-coded mask is read through the palette.
    mask = root / "masks/train" / f"{images[0].stem}.png"
    ids = np.array(Image.open(mask))
    colours = colour_table(resolve_classes("folder", CRACKS, None, 7).palette)
    rgb = colours[np.where(ids == 7, 255, ids)]
    Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(mask)
    manifest2 = fetch(data_config(layout="folder", classes=CRACKS, ignore_index=7), tmp_path / "raw_p")
    preprocess(manifest2, tmp_path / "again", OWN_PRE)
    row = pd.read_csv(tmp_path / "again/train.csv", dtype=str).iloc[0]
    assert np.array_equal(read_label_png(row["mask"]), np.where(ids == 7, 255, ids))


def test_voc_layout_with_png_images_and_its_own_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = data_config(classes=CRACKS, synthetic=OWN_CFG.replace(coco_train_images=0,
                                                               coco_val_images=0).model_dump())
    manifest = fetch(data, tmp_path / "raw")
    jpegs = Path(manifest["root"]) / "JPEGImages"
    for jpg in list(jpegs.glob("*.jpg"))[:4]:
        Image.open(jpg).save(jpg.with_suffix(".png"))
        jpg.unlink()
    manifest = fetch(data, tmp_path / "raw")
    summary = preprocess(manifest, tmp_path / "p", OWN_PRE)
    assert summary["samples"]["train"] + summary["samples"]["val"] == OWN_CFG.train_images + OWN_CFG.val_images
    assert summary["samples"]["coco_train"] == 0 and summary["hard_images"] == 0
    listed = pd.concat([pd.read_csv(tmp_path / "p/train.csv"), pd.read_csv(tmp_path / "p/val.csv")])
    assert sum(p.endswith(".png") for p in listed["image"]) == 4


@pytest.mark.parametrize("breakage, message", [
    (lambda r: save_label_png(next((r / "masks/val").iterdir()), np.full((40, 40), 3, np.uint8)),
     r"label ids \[3\] outside \[0, 3\) and the ignore value 255"),
    (lambda r: next((r / "masks/train").iterdir()).unlink(), r"1 image\(s\) without a mask in"),
    (lambda r: next((r / "images/val").iterdir()).unlink(), r"1 mask\(s\) without an image in"),
    (lambda r: Image.new("RGB", (40, 40), (1, 2, 3)).save(next((r / "masks/val").iterdir())),
     r"colour \(1, 2, 3\) at x=0, y=0 matches no class"),
])
def test_bad_own_data_is_one_line_naming_the_file(tmp_path, monkeypatch, breakage, message):
    local, manifest = _folder(tmp_path, monkeypatch)
    breakage(local)
    with pytest.raises(BadSampleError, match=message) as info:
        preprocess(manifest, tmp_path / "p", OWN_PRE)
    assert "\n" not in str(info.value) and str(local) in str(info.value)
    assert not (tmp_path / "p").exists()


def test_hard_classes_are_checked_against_the_class_names(tmp_path, monkeypatch):
    local, manifest = _folder(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=r"preprocess.hard_classes: 'bicycle' is not a class of the "
                                          r"dataset \(classes: background, crack, rust\)"):
        preprocess(manifest, tmp_path / "p", OWN_PRE.replace(hard_classes=["bicycle"]))
    summary = preprocess(manifest, tmp_path / "p", OWN_PRE.replace(hard_classes=["rust"]))
    assert summary["hard_images"] > 0


def test_params_that_contradict_the_layout_are_refused():
    with pytest.raises(ConfigError, match="data.classes: the cityscapes layout maps its label ids to its 19 official"):
        resolve_classes("cityscapes", CRACKS, None, 255)
    with pytest.raises(ConfigError, match="data.ignore_index: 1 is the id of class 'crack'"):
        resolve_classes("folder", CRACKS, None, 1)
    with pytest.raises(ConfigError, match="data.palette: 2 colours for 3 classes"):
        resolve_classes("folder", CRACKS, [(0, 0, 0), (1, 1, 1)], 255)
