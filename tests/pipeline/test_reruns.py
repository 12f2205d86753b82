"""What an edit reruns, on a copy of the finished tiny pipeline (`dvc status` and real
reruns): serving code, reports and runtime settings rerun no training; one variant's setting
reruns that variant; a new pool image reruns rank alone; an edited image, its list's readers."""

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.repo import copy_of, run, stages_run
from PIL import Image


@pytest.mark.slow
def test_what_an_edit_reruns(finished, tmp_path):
    work = copy_of(finished, tmp_path)
    params = json.loads(json.dumps(finished[1]))
    variants = list(params["ablations"])
    again = run(["dvc", "repro"], work).stdout
    # fetch always looks at the dataset files (always_changed); nothing changed, so nothing else runs
    assert [line for line in again.splitlines() if "Running stage" in line] == ["Running stage 'fetch':"]
    assert "Stage 'preprocess' didn't change, skipping" in again

    # What an edit reruns, read from `dvc status` of the finished pipeline (nothing is run).
    training = {"pretrain", "finetune", *(f"variant@{v}" for v in variants)}

    def stale_stages():
        return set(json.loads(run(["dvc", "status", "--json"], work).stdout or "{}")) - {"fetch"}

    assert stale_stages() == set()
    # serving, registration and the report: no training stage reruns; the served model's
    # windows: evaluate onward only
    for module, stale in (("serving/predict.py", set()),
                          ("serving/programs.py", {"deploy", "evaluate", "register"}),
                          ("serving/registry.py", {"register"}),
                          ("report/measure.py", {"evaluate"}), ("report/madds.py", {"evaluate"}),
                          ("serving/windows.py", {"evaluate", "register", "rank"})):
        path = work / "src/deeplab" / module
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        assert stale_stages() == stale, module
        path.write_text(original)
    assert stale_stages() == set()
    # An edit to the generator that leaves its output alone: a real `dvc repro` (the copy's own
    # src runs) runs fetch, which regenerates nothing, and nothing else.
    generator = work / "src/deeplab/prepare/synthetic/scene.py"
    original = generator.read_text()
    generator.write_text(original + "\n# an edit\n")
    assert stages_run(run(["dvc", "repro"], work).stdout) == {"fetch"}
    generator.write_text(original)
    assert stages_run(run(["dvc", "repro"], work).stdout) == {"fetch"}
    (work / "params.yaml").write_text(yaml.safe_dump({**params, "runtime": {
        **params["runtime"], "workers": 3, "threads": 1, "log_every": 1}}))
    assert stale_stages() == set()
    aspp = work / "src/deeplab/model/aspp.py"
    original = aspp.read_text()
    aspp.write_text(original + "\n# an edit\n")
    assert stale_stages() >= training | {"evaluate", "register"}
    aspp.write_text(original)

    params["evaluate"]["flip"] = [False]  # an evaluation setting: evaluate alone
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert stale_stages() == {"evaluate"}
    params["ablations"]["no_coco"]["output_stride"] = 8  # edit one variant: only it retrains
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert stale_stages() == {"evaluate", "variant@no_coco"}
    params["evaluate"]["flip"], params["ablations"]["no_coco"] = \
        finished[1]["evaluate"]["flip"], finished[1]["ablations"]["no_coco"]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert stale_stages() == set()
    # The sweep section: no stage reads it, so editing it reruns nothing
    params["sweep"] = {**params["sweep"], "trials": 3, "space": {"finetune.lr": [0.01, 0.02]}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert stale_stages() == set()

    params["pretrain"]["lrr"] = params["pretrain"].pop("lr")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    bad = run([sys.executable, "pipeline/pretrain.py", "--train-list", "a", "--val-list", "b",
               "--classes", "c", "--model", "m", "--checkpoint", "c", "--reports", "r",
               "--class-stats", "s"], work,
              check=False)
    assert bad.returncode == 2
    assert "pretrain.lrr: unknown key (did you mean 'lr'?)" in bad.stderr
    params["pretrain"]["lr"] = params["pretrain"].pop("lrr")
    (work / "params.yaml").write_text(yaml.safe_dump(params))

    # The unlabeled pool (a folder of one's own, listed by fetch): a new image reruns rank
    # and nothing else; so does a new model, with what else follows it.
    assert stale_stages() == set()
    pool = work / "my_pool"
    pool.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(pool / "a.jpg")
    params["data"]["unlabeled_root"] = "my_pool"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    run(["dvc", "repro", "fetch"], work)
    assert stale_stages() == {"rank"}
    ranked = run(["dvc", "repro", "rank"], work).stdout
    assert stages_run(ranked) == {"fetch", "rank"}  # fetch: always looks
    assert pd.read_csv(work / "reports/label_next.csv")["image"].tolist() == ["my_pool/a.jpg"]
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(pool / "b.png")
    run(["dvc", "repro", "fetch"], work)
    assert stale_stages() == {"rank"}
    run(["dvc", "repro", "rank"], work)
    assert len(pd.read_csv(work / "reports/label_next.csv")) == 2
    model = work / "models/finetune.pt"
    weights = model.read_bytes()
    model.unlink()
    model.write_bytes(weights + b"\0")  # another model
    assert "rank" in stale_stages()
    model.unlink()
    model.write_bytes(weights)
    assert stale_stages() == set()

    # An image whose bytes did not change (only its modification time) reruns no training;
    # an edited image is a dependency: its split list changes (image_sig, a hash of its
    # bytes), so the stages that read that list rerun and the others do not.
    voc = work / "data/raw/synthetic/VOC2012"
    train_id = (voc / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    image = voc / "JPEGImages" / f"{train_id}.jpg"
    os.utime(image, ns=(10**18, 10**18))
    run(["dvc", "repro", "preprocess"], work)
    assert stale_stages() == set()
    image.write_bytes(image.read_bytes() + b"\0")  # a training image, edited
    run(["dvc", "repro", "preprocess"], work)
    # the VOC trainings and the int8 calibration that reads the list; not pretrain, not evaluate
    assert stale_stages() == training - {"pretrain"} | {"deploy"}
