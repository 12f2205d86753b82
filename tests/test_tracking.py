"""Tracking: a real team server, stores that fail in seconds, data signatures."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.models import (
    free_port,
    model_and_metrics,
    register_params,
)

from deeplab.core.errors import RegistryError


def params(promote: str = "if_better"):
    return register_params(experiment="team", promote=promote)








@pytest.fixture
def tracking_server(tmp_path, monkeypatch):
    """`mlflow server --serve-artifacts` on 127.0.0.1 (SQLite backend, its own artifact
    folder); MLFLOW_TRACKING_URI points at it."""
    import urllib.request

    import mlflow

    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    proc = subprocess.Popen(
        [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--serve-artifacts", "--artifacts-destination", str(store / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError(f"mlflow server did not start: {proc.stdout.read()[-3000:]}")
            time.sleep(0.5)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "clone"))
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    (tmp_path / "clone").mkdir()
    try:
        yield uri, store
    finally:
        proc.terminate()
        proc.wait(timeout=30)
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
    repo = Path(__file__).resolve().parents[1]
    p = load_params(repo / "params.yaml")
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

    from deeplab.tracking import files_signature

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    before = files_signature([str(a), str(b)])
    assert files_signature([str(a), str(b)]) == before
    b.write_bytes(b"3")
    os.utime(b, ns=(1, 1))
    assert files_signature([str(a), str(b)]) != before
