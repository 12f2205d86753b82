"""Tracking: a real team server, stores that fail in seconds, data signatures."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import servers
from helpers.models import (
    free_port,
    model_and_metrics,
    register_params,
)
from helpers.repo import REPO

from deeplab.core.errors import RegistryError


def params(promote: str = "if_better"):
    return register_params(experiment="team", promote=promote)


start_server = servers.mlflow_server


@pytest.fixture
def tracking_server(tmp_path, monkeypatch):
    """`mlflow server --serve-artifacts` on 127.0.0.1 (SQLite backend, its own artifact
    folder); MLFLOW_TRACKING_URI points at it."""
    import mlflow

    port = free_port()
    store = tmp_path / "server"
    proc = start_server(store, port)
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "clone"))
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    (tmp_path / "clone").mkdir()
    try:
        yield uri, store
    finally:
        servers.stop(proc)
        mlflow.set_tracking_uri(None)


MLFLOW = str(Path(sys.executable).parent / "mlflow")



@pytest.mark.slow
def test_a_team_server_gets_runs_datasets_models_and_artifacts(tracking_server, tmp_path,
                                                              tiny_train_csv, tiny_val_csv,
                                                              tiny_classes):
    from mlflow import MlflowClient

    from deeplab.core.config import load_params
    from deeplab.engine.stage import PRETRAIN, StageFiles, run_training_stage
    from deeplab.serving.registry import register
    from deeplab.serving.segmenter import load_segmenter

    uri, store = tracking_server
    p = load_params(REPO / "params.yaml")
    p = p.replace(model=p.model.replace(aspp_channels=8, decoder_channels=8),
                  runtime=p.runtime.replace(workers=0),
                  pretrain=p.pretrain.replace(iterations=2, batch_size=2, crop_size=33,
                                              checkpoint_every=2, val_every=0),
                  mlflow=p.mlflow.replace(experiment="team"))
    out = tmp_path / "clone"
    run_training_stage(PRETRAIN, p, StageFiles(tiny_train_csv, tiny_val_csv, tiny_classes,
                                               out / "m.pt", out / "c.ckpt", out / "reports"))
    (out / "metrics.json").write_text(json.dumps({"miou": 0.5}))
    result = register(out / "m.pt", out / "metrics.json", params())
    assert result["aliases"] == ["champion"]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("team")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # nothing pinned
    runs = client.search_runs([experiment.experiment_id])
    training = next(r for r in runs if r.data.tags["dvc.stage"] == "pretrain")
    assert {d.dataset.name for d in training.inputs.dataset_inputs} == {"train_abs", "val_abs"}
    # The model's files went through the server into its artifact folder, not the clone's.
    assert list((store / "artifacts").rglob("MLmodel"))
    assert not (out / "mlartifacts").exists()
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 40, 50, 3), dtype=np.uint8))
    served = load_segmenter("models:/seg@champion")
    local = load_segmenter(out / "m.pt")
    with torch.no_grad():
        assert torch.equal(served(image), local(image))


def test_an_unreachable_server_or_unwritable_store_fails_in_seconds(tracking, monkeypatch, tmp_path):
    from deeplab.serving.registry import register

    model, metrics = model_and_metrics(tmp_path, 0, 0.5)
    for uri, message in (("http://127.0.0.1:9", "is not reachable"),
                         ("sqlite:////proc/mlflow.db", "is not writable"),
                         (f"sqlite:///{tmp_path}/no/such/folder/mlflow.db", "does not exist")):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        start = time.perf_counter()
        with pytest.raises(RegistryError, match=message) as info:
            register(model, metrics, params())
        assert time.perf_counter() - start < 10 and "\n" not in str(info.value)


def test_data_signature_changes_when_a_file_is_rewritten(tmp_path):
    import os

    from deeplab.core.hashing import files_signature

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    before = files_signature([str(a), str(b)])
    assert files_signature([str(a), str(b)]) == before
    b.write_bytes(b"3")
    os.utime(b, ns=(1, 1))
    assert files_signature([str(a), str(b)]) != before


def test_a_store_outside_the_repository_keeps_its_artifacts_beside_it(tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI naming an SQLite file elsewhere: its artifacts go beside it, and the
    next stage does not take the store for a moved one (before: a new experiment pointed into
    the repository's mlartifacts/, and the second stage stopped, calling it moved)."""
    from mlflow import MlflowClient

    from deeplab.serving.registry import register
    from deeplab.tracking.store import relocate_store, setup

    repo, elsewhere = tmp_path / "repo", tmp_path / "shared store"
    repo.mkdir()
    elsewhere.mkdir()
    uri = f"sqlite:///{elsewhere / 'mlflow.db'}"
    monkeypatch.setenv("DVC_ROOT", str(repo))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    setup("outside")  # the first stage makes the experiment, logs no artifact yet
    relocate_store(uri)  # the next stage: nothing to relocate, no error
    location = MlflowClient(uri).get_experiment_by_name("outside").artifact_location
    assert location == (elsewhere / "mlartifacts").resolve().as_uri()
    register(*model_and_metrics(repo, 0, 0.5), params())
    assert (elsewhere / "mlartifacts").is_dir() and not (repo / "mlartifacts").exists()


def test_a_moved_or_copied_store_keeps_its_artifacts_linked(tmp_path, monkeypatch):
    """MLflow records absolute artifact paths: after the repository folder is moved (the old
    one gone) the registered model still loads and new artifacts land in the new folder; after
    a copy, the copy writes into its own folder, never the original's."""
    import shutil

    from mlflow import MlflowClient

    from deeplab.serving.registry import register
    from deeplab.tracking.registry import load_registered

    def use(folder: Path) -> None:
        monkeypatch.setenv("DVC_ROOT", str(folder))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.delenv("DVC_EXP_NAME", raising=False)

    first = tmp_path / "first"
    first.mkdir()
    use(first)
    register(*model_and_metrics(first, 0, 0.5), params())
    moved = tmp_path / "moved here"  # a space: the URIs are percent-encoded
    shutil.move(first, moved)
    use(moved)
    state, _ = load_registered("models:/seg@champion")  # the old folder is gone
    assert state["config"]["num_classes"] == 21
    register(*model_and_metrics(moved, 1, 0.6), params())
    client = MlflowClient(f"sqlite:///{moved / 'mlflow.db'}")
    for version in client.search_model_versions("name='seg'"):
        where = client.get_model_version_download_uri("seg", version.version)
        assert Path(where.removeprefix("file://").replace("%20", " ")).is_relative_to(moved), where
    assert client.get_experiment_by_name("team").artifact_location == (moved / "mlartifacts").as_uri()

    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    before = sorted(p for p in (moved / "mlartifacts").rglob("*"))
    use(copy)
    register(*model_and_metrics(copy, 2, 0.7), params())
    assert sorted(p for p in (moved / "mlartifacts").rglob("*")) == before  # the original untouched
    assert load_registered("models:/seg/3")[0]["config"]["num_classes"] == 21

    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(copy / "mlflow.db", lone)
    shutil.rmtree(copy)
    use(lone)
    with pytest.raises(RegistryError, match=r"records its artifacts in .*copy/mlartifacts, which does "
                                            r"not exist; move the mlartifacts/ folder beside mlflow.db"):
        register(*model_and_metrics(lone, 3, 0.8), params())


STAGE = """
import json, sys
from pathlib import Path
from deeplab.core.cli import stage_main
from deeplab.core.config import parse_params
from deeplab.engine.stage import PRETRAIN, StageFiles, run_training_stage
params, train_list, val_list, out = parse_params(json.loads(sys.argv[1])), *map(Path, sys.argv[2:5])

@stage_main
def main():
    run_training_stage(PRETRAIN, params, StageFiles(
        train_list, val_list, train_list.with_name("classes.json"), out / "m.pt", out / "c.ckpt",
        out / "reports"))


main()
"""


def checkpoint_iteration(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["iteration"]
    except Exception:  # noqa: BLE001 - not written yet, or being replaced
        return 0


@pytest.mark.slow
def test_training_outlives_its_tracking_server(tmp_path, tiny_train_csv, tiny_val_csv):
    """A real `mlflow server` stopped mid-run for longer than the client's retry window, then
    restarted: training goes on, and the curve has every point exactly once. Stopped again
    before the end: the stage exits 2 in one line with the model file whole, and its rerun
    delivers the rest without training."""
    from mlflow import MlflowClient

    from deeplab.core.config import load_params

    port, store = free_port(), tmp_path / "server"
    uri = f"http://127.0.0.1:{port}"
    base = load_params(REPO / "params.yaml")
    params = base.replace(
        model=base.model.replace(aspp_channels=16, decoder_channels=16),
        runtime=base.runtime.replace(workers=0, threads=1, log_every=1),
        pretrain=base.pretrain.replace(iterations=160, batch_size=4, crop_size=65,
                                       checkpoint_every=10, val_every=80),
        mlflow=base.mlflow.replace(experiment="outage"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "TQDM_DISABLE": "1", "DVC_ROOT": str(tmp_path)}
    out = tmp_path / "out"
    args = [sys.executable, "-c", STAGE, json.dumps(params.as_dict()), str(tiny_train_csv),
            str(tiny_val_csv), str(out)]

    def wait_for(iteration: int, proc: subprocess.Popen) -> None:
        deadline = time.time() + 600
        while checkpoint_iteration(out / "c.ckpt") < iteration:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.2)

    started = []

    def serve() -> subprocess.Popen:
        started.append(start_server(store, port))
        return started[-1]

    def stop(server: subprocess.Popen) -> None:
        servers.stop(server, timeout=60)

    try:
        server = serve()
        stage = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
        wait_for(20, stage)
        stop(server)
        outage = time.time()
        while time.time() - outage < 4:  # well past 1 retry with back-off 1
            time.sleep(0.2)
        wait_for(40, stage)  # training goes on while the server is away
        server = serve()
        stderr = stage.communicate(timeout=900)[1]
        assert stage.returncode == 0, stderr[-3000:]
        assert "tracking server unreachable" in stderr and "tracking server answers again" in stderr
        client = MlflowClient(uri)
        run = client.search_runs([client.get_experiment_by_name("outage").experiment_id])[0]
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert sorted(steps) == list(range(1, 161))  # every point, exactly once
        # the starting weights at step 0 (the run's first metric: what Compare plots), then val_every
        assert [m.step for m in client.get_metric_history(run.info.run_id, "coco_val_miou")] == [0, 80, 160]

        # Away at the end: one line, exit 2, the model file whole; the rerun delivers the rest.
        shutil.rmtree(out)
        env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"
        args[3] = json.dumps(params.replace(pretrain=params.pretrain.replace(iterations=40)).as_dict())
        stage = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
        wait_for(30, stage)
        stop(server)
        stderr = stage.communicate(timeout=900)[1]
        assert stage.returncode == 2, stderr[-3000:]
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: tracking server {uri} did not answer at the end: the model "
                               f"file {out / 'm.pt'} is written and whole; ") and "Run the stage again" in last
        assert torch.load(out / "m.pt", weights_only=True)["info"]["iterations"] == 40
        assert (out / "c.ckpt.metrics.jsonl").read_text().splitlines()
        serve()
        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "resuming from" in rerun.stderr and not (out / "c.ckpt.metrics.jsonl").exists()
        runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id],
                                  order_by=["attributes.start_time DESC"])
        assert runs[0].info.status == "FINISHED" and len(runs) == 2
        steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")]
        assert sorted(steps) == list(range(1, 41))
    finally:
        for server in started:
            servers.stop(server, timeout=5)
        if "stage" in locals():
            stage.kill()
