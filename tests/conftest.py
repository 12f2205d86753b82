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

    from deeplab.config import PreprocessConfig, SyntheticData
    from deeplab.data.classes import ClassList
    from deeplab.data.preprocess import preprocess
    from deeplab.data.synthetic import generate

    root = tmp_path_factory.mktemp("tiny")
    generate(root / "raw", SyntheticData(seed=0, image_size=40, coco_train_images=2,
                                         coco_val_images=1, train_images=6, val_images=2,
                                         sbd_images=0))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        preprocess({"coco_root": "raw/coco", "root": "raw/VOC2012", "sbd_root": None,
                    "layout": "voc", "classes": ClassList.default(21).as_dict()},
                   root / "processed",
                   PreprocessConfig(min_pixels=0, hard_classes=[], on_bad_sample="error", workers=1))
    finally:
        os.chdir(cwd)
    (root / "processed/classes.json").rename(root / "classes.json")
    for split, name in (("train", "train_abs.csv"), ("val", "val_abs.csv")):
        rows = pd.read_csv(root / f"processed/{split}.csv", dtype=str)
        rows["image"] = [str(root / p) for p in rows["image"]]
        rows["mask"] = [str(root / p) for p in rows["mask"]]
        rows.to_csv(root / name, index=False)
    return root / "train_abs.csv"


@pytest.fixture(scope="session")
def tiny_val_csv(tiny_train_csv):
    """The matching VOC-style val list (absolute paths) of two 40x40 images."""
    return tiny_train_csv.with_name("val_abs.csv")


@pytest.fixture(scope="session")
def tiny_classes(tiny_train_csv):
    """The class list (classes.json) of the tiny lists: VOC's 21 classes."""
    return tiny_train_csv.with_name("classes.json")


@pytest.fixture
def dead_pid():
    """The id of a process that has exited (for 'left behind by a killed run' files)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
