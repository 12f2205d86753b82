"""Small synthetic datasets, settings and independent reference computations for the data
and engine tests."""

from pathlib import Path

import numpy as np
import pandas as pd

from deeplab.core.config import load_params
from deeplab.core.schema import PreprocessConfig, SyntheticData
from deeplab.data.classes import VOC_CLASSES, ClassList, voc_palette
from helpers.repo import REPO

# The VOC profile in small: 48x48 images with COCO, SBD and VOC's hard classes.
VOC_CFG = SyntheticData(seed=3, image_size=48, coco_train_images=12, coco_val_images=4,
                        train_images=6, val_images=4, sbd_images=5)
VOC_PRE = PreprocessConfig(min_pixels=10, hard_classes=["bicycle", "chair", "diningtable",
                                                        "pottedplant", "sofa"],
                           on_bad_sample="error", workers=1)
# Your own data in small: 40x40 images, any class list.
CRACKS = ["background", "crack", "rust"]
OWN_CFG = SyntheticData(seed=1, image_size=40, coco_train_images=6, coco_val_images=2,
                        train_images=6, val_images=3, sbd_images=0)
OWN_PRE = PreprocessConfig(min_pixels=0, hard_classes=None, on_bad_sample="error", workers=1)
# The paper's COCO -> VOC names, written out here independently of the package.
COCO_TO_VOC = {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa",
               "tv": "tvmonitor", "dining table": "diningtable", "potted plant": "pottedplant"}


def voc_manifest(raw: Path) -> dict:
    """What fetch would record for a synthetic VOC/SBD/COCO folder."""
    return {"coco_root": str(raw / "coco"), "root": str(raw / "VOC2012"),
            "sbd_root": str(raw / "SBD"), "layout": "voc",
            "classes": ClassList(VOC_CLASSES, voc_palette(21)).as_dict()}


def voc_id_of(coco) -> dict[int, int]:
    """COCO category id -> VOC id, by name."""
    return {c["id"]: VOC_CLASSES.index(COCO_TO_VOC.get(c["name"], c["name"]))
            for c in coco.dataset["categories"]
            if COCO_TO_VOC.get(c["name"], c["name"]) in VOC_CLASSES}


def independent_mask(coco, image_id: int, h: int, w: int) -> np.ndarray:
    """The documented COCO rules, computed directly with pycocotools."""
    voc_id = voc_id_of(coco)
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if a["category_id"] in voc_id]
    out = np.zeros((h, w), np.uint8)
    normal = sorted((a for a in anns if not a["iscrowd"]),
                    key=lambda a: (-int(coco.annToMask(a).sum()), a["id"]))
    for a in normal:
        out[coco.annToMask(a) > 0] = voc_id[a["category_id"]]
    for a in anns:
        if a["iscrowd"]:
            out[coco.annToMask(a) > 0] = 255
    return out


def data_config(**changes):
    """`params.data` of the repository with the small own-data generator and `changes`."""
    data = load_params(REPO / "params.yaml").data
    return data.replace(**{"synthetic": OWN_CFG.model_dump(), **changes})


def processed(tmp_path: Path, monkeypatch, name: str = "p", **changes) -> tuple[Path, dict]:
    """fetch + preprocess of the synthetic data with `changes` to `params.data`."""
    from deeplab.prepare.fetch import fetch
    from deeplab.prepare.preprocess import preprocess

    monkeypatch.chdir(tmp_path)
    manifest = fetch(data_config(**changes), tmp_path / f"raw_{name}")
    preprocess(manifest, tmp_path / name, OWN_PRE)
    return tmp_path / name, manifest


def absolute(path: Path, base: Path) -> Path:
    """A copy of a split list with paths made absolute (relative to `base`)."""
    rows = pd.read_csv(path, dtype=str)
    for col in ("image", "mask"):
        rows[col] = [str(base / p) if not Path(p).is_absolute() else p for p in rows[col]]
    out = path.with_name(path.stem + "_abs.csv")
    rows.to_csv(out, index=False)
    return out


def tiny_training(tmp_path: Path, monkeypatch):
    """The repository's params with a two-iteration finetune and a store under tmp_path."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(REPO / "params.yaml")
    return params.replace(
        model=params.model.replace(aspp_channels=8, decoder_channels=8),
        runtime=params.runtime.replace(workers=0),
        finetune=params.finetune.replace(iterations=2, batch_size=2, crop_size=33,
                                         checkpoint_every=2, val_every=0),
        mlflow=params.mlflow.replace(experiment="own-data"))
