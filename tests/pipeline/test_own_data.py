"""The README's own-data example: a 3-class folder dataset fine-tuned from the VOC champion
under its own registered name, through `dvc repro`."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.data import CRACKS
from helpers.repo import BIN, copy_of, run
from PIL import Image


@pytest.mark.slow
def test_the_readme_own_data_example_gets_its_own_champion(finished, tmp_path):
    """The README's example: a 3-class folder dataset without COCO, fine-tuned from the VOC
    champion under its own register.model_name, goes through dvc repro; VOC's @champion
    stays where it was."""
    work = copy_of(finished, tmp_path)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"].update(layout="folder", classes=CRACKS)
    params["data"]["synthetic"].update(coco_train_images=0, coco_val_images=0)
    params["preprocess"]["hard_classes"] = ["crack"]
    params["finetune"]["init"] = "models:/deeplabv3plus@champion"
    params["register"]["model_name"] = "inspection"
    params["ablations"] = {}  # no variants at all
    (work / "params.yaml").write_text(yaml.safe_dump(params))
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
    champion = client.get_model_version_by_alias("inspection", "champion")
    # its description is its model card: the classes by id, name and colour
    assert "3 classes." in champion.description
    assert "| 1 | crack |" in champion.description and "| 2 | rust |" in champion.description
    assert champion.tags["training.params"] and "models:/deeplabv3plus@champion" in \
        json.loads(champion.tags["training.params"])["finetune"]["init"]
    voc = client.get_model_version_by_alias("deeplabv3plus", "champion")
    assert int(voc.version) == 1 and "21 classes" in voc.description
    assert len(client.search_model_versions("name='deeplabv3plus'")) == 1

    images = work / "data/raw/synthetic/folder/images/val"
    result = run([str(BIN / "python"), "-m", "deeplab.serving.predict",
                  "--model", "models:/inspection@champion", "--input", str(images),
                  "--output", str(tmp_path / "pred"), "--list-classes"], work,
                 env={"PYTHONPATH": str(work / "src")})
    assert "1\tcrack\t#800000" in result.stdout
    for labels in sorted((tmp_path / "pred").glob("*.labels.png")):
        with Image.open(labels) as img:
            assert img.mode == "P"
            assert img.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]  # the dataset's colours
            assert set(np.unique(np.array(img)).tolist()) <= {0, 1, 2}
    assert "classes: " in result.stderr
