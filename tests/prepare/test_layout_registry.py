"""The layout registry (one `Layout` per layout) and the two layouts it added: COCO JSON as
labelling tools export it (Roboflow's arrangement and the instances_*.json one) and ADE20K
(0 = unlabeled), plus `reduce_zero_label` and 16-bit masks for the other layouts."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.data import CRACKS, OWN_PRE, data_config, processed
from PIL import Image
from pycocotools.coco import COCO

from deeplab.core.errors import BadSampleError, ConfigError, MissingFileError
from deeplab.data.classes import ADE20K_CLASSES
from deeplab.data.palette import read_label_png
from deeplab.prepare.fetch import fetch
from deeplab.prepare.layouts import LAYOUTS, layout, resolve_classes
from deeplab.prepare.preprocess import preprocess


def test_the_registry_defines_every_layout_the_schema_accepts():
    from deeplab.prepare.synthetic import WRITERS, generated_root

    for name, spec in LAYOUTS.items():
        assert spec.name == name and spec.required
    with pytest.raises(ConfigError, match="unknown layout 'pascal' .choose one of voc, folder"):
        layout("pascal")
    with pytest.raises(ConfigError, match="data.layout: the built-in generator does not write the "
                                          "pascal layout .*use data.source: local"):
        generated_root("pascal")  # a layout without a writer is refused for synthetic data only
    assert set(WRITERS) <= set(LAYOUTS)


def expected_coco_mask(ann_file: Path, image_id: int, class_of_name: dict[str, int]) -> np.ndarray:
    """The documented rules computed directly with pycocotools: background, then instances
    from the largest to the smallest (ties by id), crowd regions last as 255."""
    coco = COCO(str(ann_file))
    info = coco.loadImgs(image_id)[0]
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    out = np.zeros((info["height"], info["width"]), np.uint8)
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if names[a["category_id"]]
            in class_of_name]
    for a in sorted((a for a in anns if not a["iscrowd"]),
                    key=lambda a: (-int(coco.annToMask(a).sum()), a["id"])):
        out[coco.annToMask(a) > 0] = class_of_name[names[a["category_id"]]]
    for a in anns:
        if a["iscrowd"]:
            out[coco.annToMask(a) > 0] = 255
    return out


def check_coco_masks(out: Path, files: dict[str, Path], class_of_name: dict[str, int]) -> int:
    """Every processed mask equals pycocotools' own painting; returns the images checked."""
    checked = 0
    for split, ann_file in files.items():
        by_stem = {Path(i["file_name"]).stem: i["id"] for i in json.loads(ann_file.read_text())["images"]}
        for _, row in pd.read_csv(out / f"{split}.csv", dtype=str).iterrows():
            want = expected_coco_mask(ann_file, by_stem[row["id"]], class_of_name)
            assert np.array_equal(read_label_png(row["mask"]), want), row["id"]
            checked += 1
    return checked


def test_a_roboflow_export_is_found_and_its_classes_come_from_its_categories(tmp_path, monkeypatch):
    out, manifest = processed(tmp_path, monkeypatch, layout="coco", classes=CRACKS)
    root = Path(manifest["root"])
    ann = {"train": root / "train/_annotations.coco.json", "val": root / "valid/_annotations.coco.json"}
    cats = json.loads(ann["train"].read_text())["categories"]
    assert cats[0] == {"id": 0, "name": "deeplab-synthetic", "supercategory": "none"}  # Roboflow's
    assert check_coco_masks(out, ann, {"crack": 1, "rust": 2}) == 9
    # The user's own copy, classes from the categories: background, then those annotated.
    mine = tmp_path / "export"
    shutil.copytree(root, mine)
    data = json.loads((mine / "train/_annotations.coco.json").read_text())
    empty = {"id": 777, "file_name": "empty.jpg", "width": 40, "height": 40}
    Image.new("RGB", (40, 40), (9, 9, 9)).save(mine / "train/empty.jpg")
    data["images"].append(empty)
    (mine / "train/_annotations.coco.json").write_text(json.dumps(data))
    local = fetch(data_config(layout="coco", source="local", root=str(mine)), tmp_path / "raw_local")
    assert local["classes"]["names"] == CRACKS
    preprocess(local, tmp_path / "local", OWN_PRE)
    row = pd.read_csv(tmp_path / "local/train.csv", dtype=str).set_index("id").loc["empty"]
    assert not read_label_png(row["mask"]).any()  # an image without annotations: background
    # data.classes picks and orders; data.coco_map merges.
    picked = fetch(data_config(layout="coco", source="local", root=str(mine),
                               classes=["background", "rust"]), tmp_path / "raw_pick")
    preprocess(picked, tmp_path / "pick", OWN_PRE)
    assert check_coco_masks(tmp_path / "pick", {"val": mine / "valid/_annotations.coco.json"},
                            {"rust": 1}) == 3
    merged = fetch(data_config(layout="coco", source="local", root=str(mine),
                               coco_map={"rust": "damage", "crack": "damage"}), tmp_path / "raw_merge")
    assert merged["classes"]["names"] == ["background", "damage"]


def test_the_instances_arrangement_and_named_files_give_the_same_masks(tmp_path, monkeypatch):
    out, manifest = processed(tmp_path, monkeypatch, layout="coco", classes=CRACKS)
    robo = Path(manifest["root"])
    mine = tmp_path / "cvat"
    for split, folder in (("train", "train"), ("val", "valid")):
        shutil.copytree(robo / folder, mine / "images" / split)
        (mine / "annotations").mkdir(exist_ok=True)
        (mine / "images" / split / "_annotations.coco.json").rename(
            mine / "annotations" / f"instances_{split}.json")
    found = fetch(data_config(layout="coco", source="local", root=str(mine)), tmp_path / "raw_c")
    preprocess(found, tmp_path / "c", OWN_PRE)
    for split in ("train", "val"):
        a = pd.read_csv(out / f"{split}.csv", dtype=str)
        b = pd.read_csv(tmp_path / f"c/{split}.csv", dtype=str)
        assert all(np.array_equal(read_label_png(x), read_label_png(y)) for x, y in zip(a["mask"], b["mask"]))
    (mine / "annotations").rename(mine / "labels")
    with pytest.raises(MissingFileError, match="lacks annotations/instances_train.json"):
        fetch(data_config(layout="coco", source="local", root=str(mine)), tmp_path / "raw_d")
    named = data_config(layout="coco", source="local", root=str(mine), coco_files={
        "train_images": "images/train", "train_annotations": "labels/instances_train.json",
        "val_images": "images/val", "val_annotations": "labels/instances_val.json"})
    preprocess(fetch(named, tmp_path / "raw_e"), tmp_path / "e", OWN_PRE)
    assert (pd.read_csv(tmp_path / "e/val.csv")["image_sig"] == pd.read_csv(out / "val.csv")["image_sig"]).all()


def test_ade20k_ignores_zero_and_shifts_the_classes(tmp_path, monkeypatch):
    out, manifest = processed(tmp_path, monkeypatch, layout="ade20k")
    assert manifest["classes"]["names"] == list(ADE20K_CLASSES) and len(ADE20K_CLASSES) == 150
    assert manifest["classes"]["reduce_zero_label"] is True
    root = Path(manifest["root"])
    assert root.name == "ADEChallengeData2016"
    seen_zero = False
    for split, folder in (("train", "training"), ("val", "validation")):
        for _, row in pd.read_csv(out / f"{split}.csv", dtype=str).iterrows():
            raw = np.array(Image.open(root / "annotations" / folder / f"{row['id']}.png")).astype(int)
            want = np.where(raw == 0, 255, raw - 1)
            assert np.array_equal(read_label_png(row["mask"]), want)
            seen_zero |= bool((raw == 0).any())
    assert seen_zero
    with pytest.raises(ConfigError, match="use auto|leave it null"):
        resolve_classes("cityscapes", None, None, 255, reduce_zero_label=True)


def test_ignore_index_zero_names_reduce_zero_label_and_it_works_for_folders(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="set data.reduce_zero_label: true: 0 is ignored"):
        resolve_classes("folder", ["wall", "floor"], None, 0)
    out, manifest = processed(tmp_path, monkeypatch, layout="folder", classes=CRACKS,
                              reduce_zero_label=True)
    root = Path(manifest["root"])
    row = pd.read_csv(out / "train.csv", dtype=str).iloc[0]
    raw = np.array(Image.open(root / "masks/train" / f"{row['id']}.png")).astype(int)
    assert set(np.unique(raw)) <= {0, 1, 2, 3} and (raw == 0).any()
    assert np.array_equal(read_label_png(row["mask"]), np.where(raw == 0, 255, raw - 1))


def test_16_bit_masks_work_and_values_beyond_the_classes_are_one_line(tmp_path, monkeypatch):
    out, manifest = processed(tmp_path, monkeypatch, layout="folder", classes=CRACKS)
    mask = next((Path(manifest["root"]) / "masks/val").iterdir())
    ids = np.array(Image.open(mask)).astype(np.uint16)
    Image.fromarray(ids).save(mask)
    assert Image.open(mask).mode == "I;16"
    manifest = fetch(data_config(layout="folder", classes=CRACKS), tmp_path / "raw_p")
    preprocess(manifest, tmp_path / "again", OWN_PRE)
    row = pd.read_csv(tmp_path / "again/val.csv", dtype=str).set_index("id").loc[mask.stem]
    assert np.array_equal(read_label_png(row["mask"]), np.where(ids == 255, 255, ids))
    ids[0, 0] = 300
    Image.fromarray(ids).save(mask)
    manifest = fetch(data_config(layout="folder", classes=CRACKS), tmp_path / "raw_p")
    with pytest.raises(BadSampleError, match=rf"{mask.name}: label ids \[300\] outside \[0, 3\)"):
        preprocess(manifest, tmp_path / "bad", OWN_PRE)


def test_a_colour_listed_twice_is_refused_naming_both_classes():
    with pytest.raises(ConfigError, match=r"\[0, 0, 0\] is the colour of both 'background' and 'crack'"):
        resolve_classes("folder", CRACKS, [(0, 0, 0), (0, 0, 0), (9, 9, 9)], 255)


def test_cityscapes_ids_outside_the_official_table_are_refused_naming_file_and_id(tmp_path, monkeypatch):
    out, manifest = processed(tmp_path, monkeypatch, layout="cityscapes")
    label = next(Path(manifest["root"]).glob("gtFine/val/*/*_labelIds.png"))
    ids = np.array(Image.open(label))
    ids[0, 0] = 50  # the official table stops at 33
    Image.fromarray(ids, mode="L").save(label)
    manifest = fetch(data_config(layout="cityscapes"), tmp_path / "raw_p")
    with pytest.raises(BadSampleError, match=rf"{label.name}: label ids \[50\] are not in the official table"):
        preprocess(manifest, tmp_path / "bad", OWN_PRE)


@pytest.mark.parametrize("layout, classes", [("coco", CRACKS), ("ade20k", None)])
def test_a_roboflow_export_and_an_ade20k_sample_train_report_their_names_and_predict(
        tmp_path, monkeypatch, capsys, layout, classes):
    """Acceptance: a Roboflow-style export with categories crack and rust, and an ADE20K
    sample (0 ignored), each train, report their own class names and predict."""
    import torch
    from helpers.data import absolute, tiny_training

    from deeplab.engine.stage import FINETUNE, StageFiles, run_training_stage
    from deeplab.serving.predict import main as predict

    changes = {"layout": layout} | ({"classes": classes} if classes else {})
    out, manifest = processed(tmp_path, monkeypatch, **changes)
    names = classes or list(ADE20K_CLASSES)
    params = tiny_training(tmp_path, monkeypatch)
    files = StageFiles(absolute(out / "train.csv", tmp_path), absolute(out / "val.csv", tmp_path),
                       out / "classes.json", tmp_path / "m.pt", tmp_path / "c.ckpt",
                       tmp_path / "reports", class_stats=out / "class_stats.csv")
    metrics = run_training_stage(FINETUNE, params.replace(finetune=params.finetune.replace(
        init="scratch", class_weights="inverse_frequency")), files)
    assert metrics["iterations"] == 2
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["classes"]["names"] == names and state["config"]["num_classes"] == len(names)
    masks = [read_label_png(m) for m in pd.read_csv(out / "train.csv")["mask"]]
    assert max(int(m[m != 255].max()) for m in masks) < len(names)  # 0 never became a class
    image = pd.read_csv(out / "val.csv")["image"].iloc[0]
    assert predict(["--model", str(tmp_path / "m.pt"), "--input", image,
                    "--output", str(tmp_path / "pred"), "--list-classes"]) == 0
    assert f"1\t{names[1]}\t" in capsys.readouterr().out
    with Image.open(next((tmp_path / "pred").glob("*.labels.png"))) as labels:
        assert np.array(labels).max() < len(names)
