"""The whole DVC pipeline end to end on tiny settings, in a temporary copy of the repo."""

import json
import os
import sys

import pytest
import yaml

from helpers.repo import copy_repo, default_params, run, tiny

@pytest.mark.slow
def test_dvc_repro_end_to_end(tmp_path):
    params = tiny(default_params())
    work = copy_repo(tmp_path / "repo", params)

    out = run(["dvc", "repro"], work).stdout
    variants = list(params["ablations"])
    for stage in ("fetch", "preprocess", "pretrain", "finetune", "evaluate", "register",
                  *(f"variant@{v}" for v in variants)):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((work / "reports/metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and "2" in metrics["trimap"]
    table = (work / "reports/ablations.csv").read_text().splitlines()
    assert table[0].startswith("variant,train_os,eval_os,ms,flip,decoder,sc,coco,miou,madds_b")
    assert len(table) == 1 + 2 * 2 * 2 + len(variants)  # OS 16/8 x MS x flip, + one per variant
    assert sorted(line.split(",")[0] for line in table[-len(variants):]) == sorted(variants)
    assert set(json.loads((work / "reports/metrics.json").read_text())["variants"]) == set(variants)

    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("deeplabv3plus", "champion")
    assert int(champion.version) == 1
    runs = client.search_runs([client.get_experiment_by_name("deeplabv3plus").experiment_id])
    assert {r.data.tags["dvc.stage"] for r in runs} >= {"pretrain", "finetune", "evaluate", "register",
                                                        "variant@no_sc"}
    finetune = next(r for r in runs if r.data.tags["dvc.stage"] == "finetune")
    final = json.loads((work / "reports/finetune/metrics.json").read_text())["val_miou"]
    assert finetune.data.metrics["val_miou"] == final  # the runs table's column: the final value
    history = client.get_metric_history(finetune.info.run_id, "val_miou")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [2, 3]

    # The registered champion in a fresh interpreter: uint8 image in, label map out.
    script = ("import sys, numpy as np, mlflow.pyfunc; from PIL import Image\n"
              f"mlflow.set_tracking_uri('sqlite:///{work / 'mlflow.db'}')\n"
              "m = mlflow.pyfunc.load_model('models:/deeplabv3plus@champion')\n"
              "img = np.array(Image.open(sys.argv[1]).convert('RGB'))\n"
              "print(m.predict(img[None]).shape, img.shape)\n")
    image = sorted((work / "data/raw/synthetic/VOC2012/JPEGImages").glob("*.jpg"))[0]
    shapes = run([sys.executable, "-c", script, str(image)], tmp_path).stdout.split("\n")[-2]
    assert shapes == "(1, 48, 48) (48, 48, 3)"

    again = run(["dvc", "repro"], work).stdout
    # fetch always looks at the dataset files (always_changed); nothing changed, so nothing else runs
    assert [line for line in again.splitlines() if "Running stage" in line] == ["Running stage 'fetch':"]
    assert "Stage 'preprocess' didn't change, skipping" in again

    # What an edit reruns, read from `dvc status` of the finished pipeline (nothing is run).
    training = {"pretrain", "finetune", *(f"variant@{v}" for v in variants)}

    def stale_stages():
        return set(json.loads(run(["dvc", "status", "--json"], work).stdout or "{}")) - {"fetch"}

    assert stale_stages() == set()
    for module in ("src/deeplab/serving/predict.py", "src/deeplab/evaluation/report.py",
                   "src/deeplab/data/synthetic.py"):
        path = work / module
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        assert not stale_stages() & training, module
        path.write_text(original)
    assert stale_stages() == set()
    (work / "params.yaml").write_text(yaml.safe_dump({**params, "runtime": {
        **params["runtime"], "workers": 3, "threads": 1, "log_every": 1}}))
    assert stale_stages() == set()
    aspp = work / "src/deeplab/model/aspp.py"
    original = aspp.read_text()
    aspp.write_text(original + "\n# an edit\n")
    assert stale_stages() >= training | {"evaluate", "register"}
    aspp.write_text(original)

    params["evaluate"]["flip"] = [False]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    changed = run(["dvc", "repro"], work).stdout
    assert "Running stage 'evaluate'" in changed
    assert "Running stage 'finetune'" not in changed and "Running stage 'pretrain'" not in changed
    assert len((work / "reports/ablations.csv").read_text().splitlines()) == 1 + 2 * 2 + len(variants)

    params["ablations"]["no_sc"]["output_stride"] = 8  # edit one variant: only it retrains
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    changed = run(["dvc", "repro"], work).stdout
    assert "Running stage 'variant@no_sc'" in changed and "Running stage 'evaluate'" in changed
    assert "Running stage 'variant@no_decoder'" not in changed
    assert "Running stage 'finetune'" not in changed

    params["pretrain"]["lrr"] = params["pretrain"].pop("lr")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    bad = run([sys.executable, "pipeline/pretrain.py", "--train-list", "a", "--val-list", "b",
               "--classes", "c", "--model", "m", "--checkpoint", "c", "--reports", "r"], work,
              check=False)
    assert bad.returncode == 2
    assert "pretrain.lrr: unknown key (did you mean 'lr'?)" in bad.stderr
    params["pretrain"]["lr"] = params["pretrain"].pop("lrr")
    (work / "params.yaml").write_text(yaml.safe_dump(params))

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
    assert stale_stages() == training - {"pretrain"}  # the VOC trainings; not pretrain, not evaluate
