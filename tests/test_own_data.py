"""Your own data through params.yaml alone: any class list, the folder / VOC / Cityscapes
layouts, COCO mapped by name, transfer from any trained model, and one clear line for each
mistake."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from deeplab.config import ConfigError, PreprocessConfig, SyntheticData, load_params, parse_params
from deeplab.data.classes import ClassList, resolve_classes
from deeplab.data.fetch import fetch
from deeplab.data.palette import read_label_png, save_label_png
from deeplab.data.preprocess import preprocess
from deeplab.errors import BadSampleError, ModelFileError
from deeplab.model_files import save_model
from helpers.repo import REPO, copy_repo, default_params, run, tiny

CRACKS = ["background", "crack", "rust"]
PRE = PreprocessConfig(min_pixels=0, hard_classes=None, on_bad_sample="error", workers=1)
SMALL = SyntheticData(seed=1, image_size=40, coco_train_images=6, coco_val_images=2,
                      train_images=6, val_images=3, sbd_images=0)


def data_config(**changes):
    data = load_params(REPO / "params.yaml").data
    return data.replace(**{"synthetic": SMALL.model_dump(), **changes})


def processed(tmp_path, monkeypatch, name="p", **changes):
    """fetch + preprocess of the synthetic data with `changes` to `params.data`."""
    monkeypatch.chdir(tmp_path)
    manifest = fetch(data_config(**changes), tmp_path / f"raw_{name}")
    preprocess(manifest, tmp_path / name, PRE)
    return tmp_path / name, manifest


# --- The whole pipeline on a 3-class folder dataset without COCO ---------------------------

@pytest.mark.slow
def test_a_folder_dataset_of_three_classes_goes_through_dvc_repro(tmp_path):
    params = tiny(default_params())
    params["data"].update(layout="folder", classes=CRACKS)
    params["data"]["synthetic"].update(coco_train_images=0, coco_val_images=0)
    params["finetune"]["init"] = "scratch"
    params["ablations"] = {}  # no variants at all
    work = copy_repo(tmp_path / "repo", params)
    out = run(["dvc", "repro"], work).stdout
    for stage in ("fetch", "preprocess", "pretrain", "finetune", "evaluate", "register"):
        assert f"Running stage '{stage}'" in out
    assert "variant@" not in out
    assert json.loads((work / "reports/pretrain/metrics.json").read_text())["skipped"]
    per_class = pd.read_csv(work / "reports/per_class_iou.csv")
    assert per_class["class"].tolist() == CRACKS
    assert json.loads((work / "data/processed/classes.json").read_text())["names"] == CRACKS

    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("deeplabv3plus", "champion")
    assert "3 classes" in champion.description and "1 crack, 2 rust" in champion.description

    images = work / "data/raw/synthetic/folder/images/val"
    result = run([str(Path(run.__globals__["BIN"]) / "python"), "-m", "deeplab.serving.predict",
                  "--model", "models:/deeplabv3plus@champion", "--input", str(images),
                  "--output", str(tmp_path / "pred"), "--list-classes"], work,
                 env={"PYTHONPATH": str(work / "src")})
    assert "1\tcrack\t#800000" in result.stdout
    for labels in sorted((tmp_path / "pred").glob("*.labels.png")):
        with Image.open(labels) as img:
            assert img.mode == "P"
            assert img.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]  # the dataset's colours
            assert set(np.unique(np.array(img)).tolist()) <= {0, 1, 2}
    assert "classes: " in result.stderr


# --- Layouts -------------------------------------------------------------------------------

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
    from deeplab.engine.stage import run_training_stage

    params = tiny_training(tmp_path, monkeypatch)
    train = _absolute(out / "train.csv", tmp_path)
    val = _absolute(out / "val.csv", tmp_path)
    metrics = run_training_stage("finetune", params.replace(finetune=params.finetune.replace(
        init="scratch")), train, val, tmp_path / "m.pt", tmp_path / "c.ckpt", tmp_path / "reports",
        out / "classes.json")
    assert metrics["iterations"] == 2
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["config"]["num_classes"] == 19 and state["classes"]["names"][0] == "road"
    assert state["classes"]["palette"][0] == [128, 64, 128]  # Cityscapes' own colours


def _absolute(path: Path, base: Path) -> Path:
    rows = pd.read_csv(path, dtype=str)
    for col in ("image", "mask"):
        rows[col] = [str(base / p) if not Path(p).is_absolute() else p for p in rows[col]]
    out = path.with_name(path.stem + "_abs.csv")
    rows.to_csv(out, index=False)
    return out


def tiny_training(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(REPO / "params.yaml")
    return params.replace(
        model=params.model.replace(aspp_channels=8, decoder_channels=8),
        runtime=params.runtime.replace(workers=0),
        finetune=params.finetune.replace(iterations=2, batch_size=2, crop_size=33,
                                         checkpoint_every=2, val_every=0),
        mlflow=params.mlflow.replace(experiment="own-data"))


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
    colours = np.array(resolve_classes("folder", CRACKS, None, 7).colour_table())
    rgb = colours[np.where(ids == 7, 255, ids)]
    Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(mask)
    manifest2 = fetch(data_config(layout="folder", classes=CRACKS, ignore_index=7), tmp_path / "raw_p")
    preprocess(manifest2, tmp_path / "again", PRE)
    row = pd.read_csv(tmp_path / "again/train.csv", dtype=str).iloc[0]
    assert np.array_equal(read_label_png(row["mask"]), np.where(ids == 7, 255, ids))


def test_voc_layout_with_png_images_and_its_own_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = data_config(classes=CRACKS, synthetic=SMALL.replace(coco_train_images=0,
                                                               coco_val_images=0).model_dump())
    manifest = fetch(data, tmp_path / "raw")
    jpegs = Path(manifest["root"]) / "JPEGImages"
    for jpg in list(jpegs.glob("*.jpg"))[:4]:
        Image.open(jpg).save(jpg.with_suffix(".png"))
        jpg.unlink()
    manifest = fetch(data, tmp_path / "raw")
    summary = preprocess(manifest, tmp_path / "p", PRE)
    assert summary["samples"]["train"] + summary["samples"]["val"] == SMALL.train_images + SMALL.val_images
    assert summary["samples"]["coco_train"] == 0 and summary["hard_images"] == 0
    listed = pd.concat([pd.read_csv(tmp_path / "p/train.csv"), pd.read_csv(tmp_path / "p/val.csv")])
    assert sum(p.endswith(".png") for p in listed["image"]) == 4


# --- COCO by name ------------------------------------------------------------------------

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
    preprocess({**manifest, "coco_map": {"cup": "rust"}}, tmp_path / "mapped", PRE)
    stats = pd.read_csv(tmp_path / "mapped/class_stats.csv")
    coco_stats = stats[stats["split"] == "coco_train"].set_index("class")
    assert coco_stats.loc["crack", "pixels"] == 0 and coco_stats.loc["rust", "pixels"] > 0

    # A VOC class list and this COCO: nothing maps, which is an error, not 21 wrong classes.
    with pytest.raises(ConfigError, match="no COCO category maps to a class of the dataset"):
        preprocess({**manifest, "classes": ClassList.default(21).as_dict()}, tmp_path / "voc", PRE)


@pytest.mark.parametrize("coco_map, message", [
    ({"crack": "corrosion"}, "data.coco_map: 'corrosion' is not a class of the dataset"),
    ({"crak": "crack"}, "data.coco_map: 'crak' is not a category of"),
])
def test_a_coco_map_naming_what_does_not_exist_is_refused(tmp_path, monkeypatch, coco_map, message):
    monkeypatch.chdir(tmp_path)
    manifest = fetch(data_config(layout="folder", classes=CRACKS), tmp_path / "raw")
    with pytest.raises(ConfigError, match=message):
        preprocess({**manifest, "coco_map": coco_map}, tmp_path / "p", PRE)
    assert not (tmp_path / "p").exists()


# --- One clear line each, nothing half-written ------------------------------------------

def _folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = fetch(data_config(layout="folder", classes=CRACKS), tmp_path / "raw")
    local = tmp_path / "mine"
    shutil.copytree(manifest["root"], local)
    return local, {**manifest, "root": str(local), "coco_root": None}


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
        preprocess(manifest, tmp_path / "p", PRE)
    assert "\n" not in str(info.value) and str(local) in str(info.value)
    assert not (tmp_path / "p").exists()


def test_hard_classes_are_checked_against_the_class_names(tmp_path, monkeypatch):
    local, manifest = _folder(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=r"preprocess.hard_classes: 'bicycle' is not a class of the "
                                          r"dataset \(classes: background, crack, rust\)"):
        preprocess(manifest, tmp_path / "p", PRE.replace(hard_classes=["bicycle"]))
    summary = preprocess(manifest, tmp_path / "p", PRE.replace(hard_classes=["rust"]))
    assert summary["hard_images"] > 0


def test_params_that_contradict_the_layout_are_refused():
    with pytest.raises(ConfigError, match="data.classes: the cityscapes layout maps labelIds"):
        resolve_classes("cityscapes", CRACKS, None, 255)
    with pytest.raises(ConfigError, match="data.ignore_index: 1 is the id of class 'crack'"):
        resolve_classes("folder", CRACKS, None, 1)
    with pytest.raises(ConfigError, match="data.palette: 2 colours for 3 classes"):
        resolve_classes("folder", CRACKS, [(0, 0, 0), (1, 1, 1)], 255)


def test_finetune_from_pretrain_without_coco_names_the_fix(tmp_path, monkeypatch):
    from deeplab.engine.stage import initial_model, skip_pretraining

    params = tiny_training(tmp_path, monkeypatch)
    classes = resolve_classes("folder", CRACKS, None, 255)
    skip_pretraining(params, classes, tmp_path / "pretrain.pt", tmp_path / "reports")
    with pytest.raises(ConfigError, match="finetune.init is 'pretrain' but the pretrain stage had no "
                                          "COCO data.*set finetune.init to scratch"):
        initial_model("finetune", params, 3, tmp_path / "pretrain.pt")


# --- Transfer from any trained model -----------------------------------------------------

def test_transfer_from_a_21_class_model_loads_all_but_the_head_and_trains(tmp_path, monkeypatch):
    from deeplab.engine.stage import build_model, initial_model, run_training_stage

    params = tiny_training(tmp_path, monkeypatch)
    torch.manual_seed(7)
    voc_model = build_model(params.model, 21)
    save_model(tmp_path / "voc.pt", voc_model)
    params = params.replace(finetune=params.finetune.replace(init=str(tmp_path / "voc.pt")))
    model, origin = initial_model("finetune", params, 3, None)
    theirs, ours = voc_model.state_dict(), model.state_dict()
    head = {k for k in ours if k.startswith("head.classifier.")}
    assert head == {"head.classifier.weight", "head.classifier.bias"}
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k not in head)
    assert ours["head.classifier.weight"].shape[0] == 3
    assert "2 tensors re-initialised" in origin

    out, _ = processed(tmp_path, monkeypatch, layout="folder", classes=CRACKS)
    metrics = run_training_stage("finetune", params, _absolute(out / "train.csv", tmp_path),
                                 _absolute(out / "val.csv", tmp_path), tmp_path / "m.pt",
                                 tmp_path / "c.ckpt", tmp_path / "r", out / "classes.json")
    assert metrics["iterations"] == 2
    assert torch.load(tmp_path / "m.pt", weights_only=True)["classes"]["names"] == CRACKS


def test_transfer_from_another_backbone_is_one_line_naming_both(tmp_path, monkeypatch):
    from deeplab.engine.stage import initial_model

    params = tiny_training(tmp_path, monkeypatch)
    from deeplab.model import DeepLabV3Plus
    save_model(tmp_path / "r50.pt", DeepLabV3Plus(21, "resnet50", 16, aspp_channels=8,
                                                  decoder_channels=8))
    params = params.replace(finetune=params.finetune.replace(init=str(tmp_path / "r50.pt")))
    with pytest.raises(ModelFileError, match=r"finetune.init: .*r50.pt is a resnet50 model, this one "
                                             r"is mobilenet_v2; set model.backbone: resnet50"):
        initial_model("finetune", params, 3, None)


def test_transfer_from_a_registered_model(tmp_path, monkeypatch):
    from deeplab.engine.stage import build_model, initial_model
    from deeplab.serving.registry import register

    params = tiny_training(tmp_path, monkeypatch)
    torch.manual_seed(3)
    source = build_model(params.model, 21)
    save_model(tmp_path / "voc.pt", source)
    (tmp_path / "metrics.json").write_text(json.dumps({"miou": 0.5}))
    reg = parse_params({"seed": 0, "mlflow": {"experiment": "own-data"},
                        "register": {"model_name": "voc", "min_miou": 0.0, "inference": {
                            "output_stride": 16, "scales": [1.0], "flip": False}}},
                       sections=("register", "mlflow"))
    register(tmp_path / "voc.pt", tmp_path / "metrics.json", reg)
    params = params.replace(finetune=params.finetune.replace(init="models:/voc@champion"))
    model, origin = initial_model("finetune", params, 3, None)
    assert origin.startswith("model models:/voc@champion")
    ours, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith("head.classifier."))
