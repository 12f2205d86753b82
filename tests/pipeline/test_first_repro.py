"""The tiny pipeline's first `dvc repro` (shared by the pipeline tests, built here first): what
ran and what it recorded, the registered champion in a fresh interpreter, offline plots, and
the runs in a real browser."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import servers
from helpers.repo import BIN, copy_of, run, stages_run


@pytest.mark.slow
def test_a_tiny_dvc_repro_runs_every_stage_and_records_what_it_did(finished, tmp_path):
    work, params, out = finished
    variants = list(params["ablations"])
    assert stages_run(out) == {"fetch", "preprocess", "pretrain", "finetune", "deploy",
                                "evaluate", "register", "rank", *(f"variant@{v}" for v in variants)}
    metrics = json.loads((work / "reports/metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and "2" in metrics["trimap"]
    table = (work / "reports/ablations.csv").read_text().splitlines()
    assert table[0] == ("row,variant,runtime,precision,train_os,eval_os,ms,flip,decoder,sc,coco,"
                        "miou,mdice,madds_b,miou_low,miou_high,ms_per_image")
    assert metrics["miou_low"] <= metrics["miou"] <= metrics["miou_high"]
    # OS 16/8 x MS x flip, one per variant, one per deployed format
    assert len(table) == 1 + 2 * 2 * 2 + len(variants) + 3
    assert sorted(line.split(",")[1] for line in table[-3 - len(variants):-3]) == sorted(variants)
    assert [line.split(",")[2:4] for line in table[-3:]] == [["torch", "fp32"], ["onnxruntime", "fp32"],
                                                            ["onnxruntime", "int8"]]
    assert abs(metrics["deployed"]["onnxruntime/fp32"]["drop"]) <= 0.002  # exact up to fp32 sums
    assert set(metrics["variants"]) == set(variants)

    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("deeplabv3plus", "champion")
    assert int(champion.version) == 1
    # The model card: written beside the reports, its text the version's description, logged
    # with the version; its numbers are the reports' (tests/serving/test_model_card.py).
    card = (work / "reports/MODEL_CARD.md").read_text()
    front, body = card.removeprefix("---\n").split("\n---\n", 1)
    assert yaml.safe_load(front)["model-index"][0]["results"][0]["metrics"][0]["value"] == metrics["miou"]
    assert champion.description == body.lstrip()
    assert f"mIoU {metrics['miou']:.4f}" in body and "synthetic data" in body
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    local = mlflow.artifacts.download_artifacts(f"models:/deeplabv3plus/{champion.version}",
                                                dst_path=str(tmp_path / "model"))
    assert (Path(local) / "artifacts/MODEL_CARD.md").read_text() == card
    # predict on the registered model runs what the version serves: the fastest format that
    # evaluate measured within deploy.max_drop (register.serve.runtime: auto).
    served = json.loads((Path(local) / "artifacts/serve.json").read_text())["auto"]["order"][0]
    image = sorted((work / "data/raw/synthetic/VOC2012/JPEGImages").glob("*.jpg"))[0]
    said = run([sys.executable, "-m", "deeplab.serving.predict", "--model",
                "models:/deeplabv3plus@champion", "--input", str(image), "--output",
                str(tmp_path / "predicted")], work,
               env={"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}).stdout
    assert said.strip().splitlines()[-1].endswith(f"({served.replace('/', ' ')})"), said
    assert (tmp_path / "predicted" / f"{image.name}.labels.png").is_file()
    runs = client.search_runs([client.get_experiment_by_name("deeplabv3plus").experiment_id])
    runs = [r for r in runs if "dvc.stage" in r.data.tags]  # the stage runs (not their parent)
    assert {r.data.tags["dvc.stage"] for r in runs} >= {"pretrain", "finetune", "evaluate",
                                                        "register", "variant@no_decoder"}
    finetune = next(r for r in runs if r.data.tags["dvc.stage"] == "finetune")
    final = json.loads((work / "reports/finetune/metrics.json").read_text())["val_miou"]
    assert finetune.data.metrics["val_miou"] == final  # the runs table's column: the final value
    history = client.get_metric_history(finetune.info.run_id, "val_miou")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 2, 3]  # 0: the start
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
    assert " · dvc repro " in parent.info.run_name and " · no_decoder " in parent.info.run_name
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
    ui = servers.start([str(BIN / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
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
        for ablation in ("main", *finished[1]["ablations"]):
            assert ablation in text
        # The parallel-coordinates plot's metric axis: the validation mIoU (MLflow plots the
        # first metric a run logged; the training runs log it first, at step 0), not the loss.
        page.locator("svg text", has_text="val_miou").first.wait_for(timeout=60_000)
        axes = page.locator("svg text").all_text_contents()
        assert "val_miou" in axes and "loss" not in axes, axes
    finally:
        servers.stop(ui)


@pytest.mark.slow
def test_the_serving_bench_runs_on_the_pipeline(finished, tmp_path):
    """bench/serve_bench.py on the tiny pipeline's files: both versions registered by
    `register`, served by `mlflow models serve`, timed; `auto` serves what evaluate measured."""
    work = copy_of(finished, tmp_path)
    out = tmp_path / "serve"
    run([sys.executable, str(Path(__file__).parents[2] / "bench" / "serve_bench.py"), "--requests",
         "2", "--warmup", "0", "--size", "48", "--out", str(out)], work)
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {r["serve"]: r for r in result["rows"]}
    assert rows["torch/fp32"]["served"] == "torch/fp32" and rows["torch/fp32"]["speedup"] == 1.0
    metrics = json.loads((work / "reports/metrics.json").read_text())
    assert rows["auto"]["served"] in metrics["deployed"]
    assert all(r["median_ms"] > 0 and r["requests"] == 2 for r in rows.values())
