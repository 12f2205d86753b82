"""The whole DVC pipeline on tiny settings, in temporary copies of the repository: what runs
and what each stage loads, what an edit reruns, a clone that pulls, a queued sweep, a 3-class
folder dataset. One tiny `dvc repro` is shared (copied) by the tests that start from it."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.data import CRACKS
from helpers.repo import BIN, copy_repo, default_params, run, tiny
from PIL import Image

GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def _stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


LOADED_MARK = "deeplab modules loaded: "
SHIPPED = {"register": {"src/deeplab/serving/pyfunc_model.py", "src/deeplab/uncertainty/__init__.py",
                        "src/deeplab/uncertainty/confidence.py"}}  # logged as code, not imported
SITECUSTOMIZE = f"""import atexit, json, sys
atexit.register(lambda: print({LOADED_MARK!r} + json.dumps(sorted(
    m for m in sys.modules if m == "deeplab" or m.startswith("deeplab."))), file=sys.stderr))
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny pipeline after its first `dvc repro`, each stage process printing at exit the
    `deeplab` modules it loaded (a sitecustomize hook; `-X importtime` misses the ones
    `importlib.import_module` loads): (folder, params, output)."""
    params = tiny(default_params())
    base = tmp_path_factory.mktemp("finished")
    (base / "hook").mkdir()
    (base / "hook" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    work = copy_repo(base / "repo", params)
    out = run(["dvc", "repro"], work, env={"PYTHONPATH": f"{work / 'src'}:{base / 'hook'}"},
              merge=True).stdout
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "first repro"], work, env=GIT)
    return work, params, out


def copy_of(finished, tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    shutil.copytree(finished[0], work, symlinks=True)
    return work


@pytest.mark.slow
def test_a_tiny_dvc_repro_runs_every_stage_and_each_loads_only_its_dependencies(finished, tmp_path):
    work, params, out = finished
    variants = list(params["ablations"])
    assert _stages_run(out) == {"fetch", "preprocess", "pretrain", "finetune", "deploy",
                                "evaluate", "register", "rank", *(f"variant@{v}" for v in variants)}
    metrics = json.loads((work / "reports/metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and "2" in metrics["trimap"]
    table = (work / "reports/ablations.csv").read_text().splitlines()
    assert table[0] == ("row,variant,runtime,precision,train_os,eval_os,ms,flip,decoder,sc,coco,"
                        "miou,madds_b,miou_low,miou_high,ms_per_image")
    assert metrics["miou_low"] <= metrics["miou"] <= metrics["miou_high"]
    # OS 16/8 x MS x flip, one per variant, one per deployed format
    assert len(table) == 1 + 2 * 2 * 2 + len(variants) + 3
    assert sorted(line.split(",")[1] for line in table[-3 - len(variants):-3]) == sorted(variants)
    assert [line.split(",")[2:4] for line in table[-3:]] == [["torch", "fp32"], ["onnxruntime", "fp32"],
                                                            ["onnxruntime", "int8"]]
    assert abs(metrics["deployed"]["onnxruntime/fp32"]["drop"]) <= 0.002  # exact up to fp32 sums
    assert set(metrics["variants"]) == set(variants)

    # What every stage imported while it ran is a DVC dependency of that stage, and every
    # module a stage lists is one it imported (a folder: every module in it).
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    stage, loaded = None, {}
    for line in out.splitlines():
        if line.startswith("Running stage"):
            stage = line.split("'")[1]
        elif line.startswith(LOADED_MARK) and stage:
            loaded.setdefault(stage, set()).update(json.loads(line[len(LOADED_MARK):]))
    assert set(loaded) == set(lock) and "deeplab.engine.loop" in loaded["finetune"]
    for stage, modules in loaded.items():
        deps = [d["path"] for d in lock[stage].get("deps", []) if d["path"].startswith("src/")]
        files = set()
        for module in modules:
            base = work / "src" / module.replace(".", "/")
            rel = str((base / "__init__.py" if base.is_dir() else base.with_suffix(".py"))
                      .relative_to(work))
            files.add(rel)
            assert any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps), \
                f"stage {stage} loads {rel}, which dvc.yaml does not list"
        for dep in deps:
            if dep in SHIPPED.get(stage, ()):
                continue
            listed = [dep] if dep.endswith(".py") else \
                [str(f.relative_to(work)) for f in sorted((work / dep).rglob("*.py"))]
            unused = [f for f in listed if f not in files]
            assert not unused, f"stage {stage} lists {dep} but never loads {unused}"

    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("deeplabv3plus", "champion")
    assert int(champion.version) == 1
    runs = client.search_runs([client.get_experiment_by_name("deeplabv3plus").experiment_id])
    runs = [r for r in runs if "dvc.stage" in r.data.tags]  # the stage runs (not their parent)
    assert {r.data.tags["dvc.stage"] for r in runs} >= {"pretrain", "finetune", "evaluate",
                                                        "register", "variant@no_sc"}
    finetune = next(r for r in runs if r.data.tags["dvc.stage"] == "finetune")
    final = json.loads((work / "reports/finetune/metrics.json").read_text())["val_miou"]
    assert finetune.data.metrics["val_miou"] == final  # the runs table's column: the final value
    history = client.get_metric_history(finetune.info.run_id, "val_miou")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [2, 3]
    # Runs that compare: each training run says which ablation it is and logs its own
    # settings only; one pipeline run groups the stages; evaluate logs every row.
    training = [r for r in runs if r.data.tags["dvc.stage"] in {"pretrain", "finetune",
                                                                *(f"variant@{v}" for v in variants)}]
    for r in training:
        assert r.data.params["ablation"] == (r.data.tags["dvc.stage"].partition("@")[2] or "main")
        assert not [k for k in r.data.params if k.startswith("ablations")], r.info.run_name
        assert r.info.run_name.startswith(r.data.tags["dvc.stage"] + " · ")  # its result in its name
    by_ablation = {r.data.params["ablation"]: r for r in training if r.data.tags["dvc.stage"] != "pretrain"}
    assert by_ablation["no_decoder"].data.params["model.decoder"] == "False"
    assert by_ablation["no_coco"].data.params["finetune.init"] == "scratch"
    assert "coco_val_miou" in next(r for r in training if r.data.tags["dvc.stage"] == "pretrain").data.metrics
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    assert len(parents) == 1 and None not in parents  # every stage run nested under one pipeline run
    parent = client.get_run(parents.pop())
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("mIoU ")
    assert " · dvc repro " in parent.info.run_name and " · no_sc " in parent.info.run_name
    evaluation = next(r for r in runs if r.data.tags["dvc.stage"] == "evaluate")
    for name in variants:
        assert {f"{name}_os16/{k}" for k in ("miou", "miou_low", "miou_high")} <= set(evaluation.data.metrics)
    assert evaluation.data.tags["best_strategy"].startswith("main_os")
    assert "val_miou" not in next(r for r in runs if r.data.tags["dvc.stage"] == "register").data.metrics

    # The registered champion in a fresh interpreter: uint8 image in, label map out.
    script = ("import sys, numpy as np, mlflow.pyfunc; from PIL import Image\n"
              f"mlflow.set_tracking_uri('sqlite:///{work / 'mlflow.db'}')\n"
              "m = mlflow.pyfunc.load_model('models:/deeplabv3plus@champion')\n"
              "img = np.array(Image.open(sys.argv[1]).convert('RGB'))\n"
              "print(m.predict(img[None]).shape, img.shape)\n")
    image = sorted((work / "data/raw/synthetic/VOC2012/JPEGImages").glob("*.jpg"))[0]
    shapes = run([sys.executable, "-c", script, str(image)], tmp_path).stdout.split("\n")[-2]
    assert shapes == "(1, 48, 48) (48, 48, 3)"


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
    # serving, registered models and the report: no training stage reruns
    for module in ("src/deeplab/serving/predict.py", "src/deeplab/serving/programs.py",
                   "src/deeplab/serving/registry.py", "src/deeplab/registered.py",
                   "src/deeplab/report/ablations.py", "src/deeplab/report/madds.py"):
        path = work / module
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        assert not stale_stages() & training, module
        path.write_text(original)
    assert stale_stages() == set()
    # An edit to the generator that leaves its output alone: a real `dvc repro` (the copy's own
    # src runs) runs fetch, which regenerates nothing, and nothing else.
    generator = work / "src/deeplab/prepare/synthetic/scene.py"
    original = generator.read_text()
    generator.write_text(original + "\n# an edit\n")
    assert _stages_run(run(["dvc", "repro"], work).stdout) == {"fetch"}
    generator.write_text(original)
    assert _stages_run(run(["dvc", "repro"], work).stdout) == {"fetch"}
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
    assert len((work / "reports/ablations.csv").read_text().splitlines()) == 1 + 2 * 2 + len(variants) + 3

    params["ablations"]["no_sc"]["output_stride"] = 8  # edit one variant: only it retrains
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    changed = run(["dvc", "repro"], work).stdout
    assert "Running stage 'variant@no_sc'" in changed and "Running stage 'evaluate'" in changed
    assert "Running stage 'variant@no_decoder'" not in changed
    assert "Running stage 'finetune'" not in changed

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
    assert _stages_run(ranked) == {"fetch", "rank"}  # fetch: always looks
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


@pytest.mark.slow
def test_pull_then_nothing_retrains_and_a_queued_sweep_reruns_only_finetune(finished, tmp_path):
    """A teammate's clone: `dvc pull` from a directory remote, then `dvc repro` runs no
    training stage and leaves dvc.lock as it was. Two queued `finetune.lr` points rerun only
    finetune and what follows it."""
    work = copy_of(finished, tmp_path)
    run(["dvc", "remote", "add", "-d", "team", str(tmp_path / "remote")], work)
    run(["dvc", "push"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "results"], work, env=GIT)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(work), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    for model in ("pretrain.pt", "finetune.pt"):
        assert (clone / "models" / model).read_bytes() == (work / "models" / model).read_bytes()
    again = run(["dvc", "repro"], clone).stdout
    assert _stages_run(again) == {"fetch"}, again
    assert run(["git", "status", "--porcelain", "dvc.lock"], clone).stdout == ""

    # Two sweep points in the queue: finetune and what follows it run, the ablation variants
    # included; the second drops them (docs/tracking.md "Sweeps"), so they do not retrain.
    variants = list(finished[1]["ablations"])
    main_only = [arg for v in variants for arg in ("-S", f"~ablations.{v}")]
    run(["dvc", "exp", "run", "--queue", "-S", "finetune.lr=0.01"], work)
    run(["dvc", "exp", "run", "--queue", "-S", "finetune.lr=0.02", *main_only], work)
    run(["dvc", "queue", "start"], work)
    deadline = time.time() + 3600  # a safety net: a busy machine is slow, not broken
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], work).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    tasks = [line.split() for line in status.splitlines()[1:] if line.strip() and "Success" in line]
    assert len(tasks) == 2, status
    names = [parts[1] for parts in tasks]  # columns: Task, Name, Created (hh:mm AM), Status
    ran = []
    for parts in tasks:
        ran.append(_stages_run(run(["dvc", "queue", "logs", parts[0]], work).stdout))
    follows = {"fetch", "finetune", "deploy", "evaluate", "register", "rank"}
    assert sorted(ran, key=len) == [follows, follows | {f"variant@{v}" for v in variants}], ran

    # The documented `dvc exp show` (docs/tracking.md) leads with the mIoU, then the variants'
    # and the changed params, and fits a 120-column terminal.
    show = ["dvc", "exp", "show", "--no-pager", "--only-changed", "--drop",
            "Created|reports/.*|models/.*|data/.*|src/.*|pipeline/.*"]
    header = run([*show, "--csv"], work).stdout.splitlines()[0].split(",")
    first = header.index("miou")  # after Experiment, rev, typ (and a queue's State, Executor)
    assert header[first:first + 3] == ["miou", "low", "high"], header
    assert not [h for h in header[:first] if h not in ("Experiment", "rev", "typ", "State", "Executor")]
    assert "finetune.lr" in header and "train_images_per_s" not in ",".join(header)
    if shutil.which("script"):  # a terminal of 120 columns (util-linux)
        table = run(["script", "-qc", "stty cols 120; " + " ".join(
            f"'{a}'" if "|" in a else a for a in show), "/dev/null"], work).stdout
        assert max(len(re.sub(r"\x1b\[[0-9;]*m", "", line)) for line in table.splitlines()) <= 120

    # Each MLflow run records the experiment and its exact params; the sweep moved no alias.
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deeplabv3plus")
    finetunes = client.search_runs([experiment.experiment_id],
                                   filter_string="tags.`dvc.stage` = 'finetune'")
    swept = {r.data.tags["dvc.exp"]: r.data.params["finetune.lr"] for r in finetunes
             if r.data.tags["dvc.exp"] != "workspace"}
    assert sorted(swept.values()) == ["0.01", "0.02"] and set(swept) == set(names)
    champion = client.get_model_version_by_alias("deeplabv3plus", "champion")
    assert champion.tags.get("dvc.exp", "workspace") == "workspace"
    versions = client.search_model_versions("name='deeplabv3plus'")
    assert {v.tags.get("dvc.exp") for v in versions} >= set(names)
    for v in versions:
        if v.tags.get("dvc.exp") in names:
            assert json.loads(v.tags["training.params"])["finetune"]["lr"] in (0.01, 0.02)


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
    assert "3 classes" in champion.description and "1 crack, 2 rust" in champion.description
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


@pytest.mark.slow
def test_dvc_plots_show_needs_no_network(finished, tmp_path):
    """Every plot is an image (matplotlib PNG): the HTML loads no script and nothing remote."""
    import re

    work = copy_of(finished, tmp_path)
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], work)
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "<script" not in html and not re.search(r"(src|href)=[\"']?(https?:)?//", html)
    images = re.findall(r"<img[^>]*src=\"([^\"]+)\"", html)
    names = {Path(src).name for src in images}
    for plot in ("curves.png", "ablations.png", "per_class_iou.png", "trimap.png", "confusion.png"):
        assert any(n.endswith(plot) for n in names), (plot, names)
    assert all((tmp_path / "plots" / src).is_file() for src in images)


@pytest.mark.slow
def test_the_mlflow_ui_in_a_real_browser(finished, tmp_path, chromium):
    """Headless Chromium (Debian's, driven by Playwright) on `mlflow ui`: the experiment opens
    in the model-training view, the runs say their val mIoU, and Compare of finetune and the
    variants lists `ablation` and the params that differ."""
    from helpers.models import free_port, wait_for_http
    from mlflow import MlflowClient

    from deeplab.tracking.ui import compare_url, experiment_url

    work = copy_of(finished, tmp_path)
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deeplabv3plus").experiment_id
    runs = client.search_runs([experiment])
    compared = [r.info.run_id for r in runs if r.data.tags.get("dvc.stage", "").startswith(
        ("finetune", "variant@"))]
    port = free_port()
    ui = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
                           "--host", "127.0.0.1", "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/health", ui)
        page = chromium.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(experiment_url(base, experiment))
        page.get_by_text("dvc repro", exact=False).first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        assert "Model training" in text and "Runs" in text
        assert "Judges" not in text and "Sessions" not in text  # the GenAI view's sections
        assert "mIoU " in text  # the pipeline run says its result in the runs table
        page.screenshot(path=str(tmp_path / "runs.png"))
        page.goto(compare_url(base, experiment, compared))
        page.get_by_text("ablation", exact=True).first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        for param in ("ablation", "model.decoder", "model.separable", "finetune.init"):
            assert param in text, param
        for ablation in ("main", "no_decoder", "no_sc", "no_coco"):
            assert ablation in text
    finally:
        ui.terminate()
        ui.wait(timeout=60)
