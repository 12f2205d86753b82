import os

import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def repo_root():
    from pathlib import Path
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_train_csv(tmp_path_factory):
    """A VOC-style train_aug list (absolute paths) of six 40x40 synthetic images."""
    import pandas as pd

    from deeplab.data.preprocess import preprocess
    from deeplab.data.synthetic import generate

    root = tmp_path_factory.mktemp("tiny")
    generate(root / "raw", dict(seed=0, image_size=40, coco_train_images=2, coco_val_images=1,
                                voc_train_images=6, voc_val_images=2, sbd_images=0))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        preprocess({"coco_root": "raw/coco", "voc_root": "raw/VOC2012", "sbd_root": None},
                   root / "processed", dict(min_pixels=0, hard_classes=[], on_bad_sample="error"))
    finally:
        os.chdir(cwd)
    rows = pd.read_csv(root / "processed/voc_train_aug.csv", dtype=str)
    rows["image"] = [str(root / p) for p in rows["image"]]
    rows["mask"] = [str(root / p) for p in rows["mask"]]
    out = root / "train_abs.csv"
    rows.to_csv(out, index=False)
    return out
