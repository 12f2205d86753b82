"""The whole DVC pipeline end to end on tiny settings, in a temporary copy of the repo."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent


def run(args, cwd, check=True):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TQDM_DISABLE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def tiny(params):
    params["data"]["synthetic"].update(image_size=48, coco_train_images=12, coco_val_images=4,
                                       voc_train_images=8, voc_val_images=4, sbd_images=4)
    params["preprocess"]["min_pixels"] = 10
    for stage in ("pretrain", "finetune"):
        params[stage].update(iterations=3, batch_size=2, crop_size=33, checkpoint_every=2, val_every=2)
    params["model"].update(aspp_channels=16, decoder_channels=16)
    params["runtime"]["workers"] = 0
    params["evaluate"].update(scales=[1.0, 1.5], trimap_widths=[2], sample_images=2, madds_size=65)
    return params


@pytest.mark.slow
def test_dvc_repro_end_to_end(tmp_path, repo_root):
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("dvc.yaml", ".dvcignore", "pipeline", "src"):
        src = repo_root / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    shutil.copytree(repo_root / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    params = tiny(yaml.safe_load((repo_root / "params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "init", "-q"], work)

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
               "--model", "m", "--checkpoint", "c", "--reports", "r"], work, check=False)
    assert bad.returncode == 2
    assert "pretrain.lrr: unknown key (did you mean 'lr'?)" in bad.stderr
    params["pretrain"]["lr"] = params["pretrain"].pop("lrr")
    (work / "params.yaml").write_text(yaml.safe_dump(params))

    # An edited image is a dependency too: its split list changes (image_sig), so the stages
    # that read that list rerun and the others do not.
    voc = work / "data/raw/synthetic/VOC2012"
    train_id = (voc / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    os.utime(voc / "JPEGImages" / f"{train_id}.jpg", ns=(10**18, 10**18))  # a training image
    run(["dvc", "repro", "preprocess"], work)
    assert stale_stages() == training - {"pretrain"}  # the VOC trainings; not pretrain, not evaluate
