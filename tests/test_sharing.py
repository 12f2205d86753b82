"""Working as a team: a real MLflow tracking server with its own artifact store, a champion
that moves only on purpose, and stores that fail fast."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deeplab.config import parse_params
from deeplab.errors import RegistryError
from deeplab.model import DeepLabV3Plus
from deeplab.model_files import save_model

MLFLOW = str(Path(sys.executable).parent / "mlflow")
REGISTER = {"seed": 0, "mlflow": {"experiment": "team"},
            "register": {"model_name": "seg", "min_miou": 0.0, "promote": "if_better",
                         "inference": {"output_stride": 16, "scales": [1.0], "flip": False}}}


def params(promote: str = "if_better"):
    raw = json.loads(json.dumps(REGISTER))
    raw["register"]["promote"] = promote
    return parse_params(raw, sections=("register", "mlflow"))


def net(seed: int) -> DeepLabV3Plus:
    torch.manual_seed(seed)
    return DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=8, decoder_channels=8).eval()


def model_and_metrics(tmp_path: Path, seed: int, miou: float) -> tuple[Path, Path]:
    model = tmp_path / f"m{seed}.pt"
    save_model(model, net(seed), stage="finetune")
    metrics = tmp_path / f"metrics{seed}.json"
    metrics.write_text(json.dumps({"miou": miou}))
    return model, metrics


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path, monkeypatch):
    """`mlflow server --serve-artifacts` on 127.0.0.1 (SQLite backend, its own artifact
    folder); MLFLOW_TRACKING_URI points at it."""
    import urllib.request

    import mlflow

    port = _free_port()
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


@pytest.mark.slow
def test_a_team_server_gets_runs_datasets_models_and_artifacts(tracking_server, tmp_path,
                                                              tiny_train_csv, tiny_val_csv,
                                                              tiny_classes):
    from mlflow import MlflowClient

    from deeplab.config import load_params
    from deeplab.engine.stage import run_training_stage
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
    run_training_stage("pretrain", p, tiny_train_csv, tiny_val_csv, out / "m.pt", out / "c.ckpt",
                       out / "reports", tiny_classes)
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


def test_an_unreachable_server_or_unwritable_store_fails_in_seconds(local_store, monkeypatch, tmp_path):
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


def test_the_champion_moves_by_the_rule_and_never_in_an_experiment(local_store, monkeypatch):
    from mlflow import MlflowClient

    from deeplab.serving.registry import register

    tmp = local_store
    first = register(*model_and_metrics(tmp, 0, 0.5), params())
    assert first["aliases"] == ["champion"]
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lamb")  # a sweep point
    swept = register(*model_and_metrics(tmp, 1, 0.9), params())
    assert swept["aliases"] == []  # better, but a sweep never moves the champion
    monkeypatch.delenv("DVC_EXP_NAME")
    assert register(*model_and_metrics(tmp, 2, 0.4), params())["aliases"] == ["challenger"]
    assert register(*model_and_metrics(tmp, 3, 0.3), params("always"))["aliases"] == ["champion"]
    assert register(*model_and_metrics(tmp, 4, 0.99), params("never"))["aliases"] == ["challenger"]

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    sweep_version = client.get_model_version("seg", str(swept["version"]))
    assert sweep_version.tags["dvc.exp"] == "brisk-lamb" and not sweep_version.aliases
    champion = client.get_model_version_by_alias("seg", "champion")
    assert int(champion.version) == 4
    assert champion.tags["promotion.reason"].startswith("register.promote: always")
    assert champion.tags["promotion.previous"] == "1" and "@" in champion.tags["promotion.by"]


def test_promote_command_records_who_what_and_why(local_store, capsys):
    from mlflow import MlflowClient

    from deeplab.serving.promote import main as promote
    from deeplab.serving.registry import register

    tmp = local_store
    register(*model_and_metrics(tmp, 0, 0.5), params())
    register(*model_and_metrics(tmp, 1, 0.4), params())
    repo = Path(__file__).resolve().parents[1]
    assert promote(["--name", "seg", "--version", "2", "--reason", "better on the night shots",
                    "--params", str(repo / "params.yaml")]) == 0
    assert "seg version 2 is @champion (was 1)" in capsys.readouterr().out
    champion = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}").get_model_version_by_alias("seg", "champion")
    assert str(champion.version) == "2" and champion.aliases == ["champion"] and champion.tags["promotion.reason"] == "better on the night shots"
    assert promote(["--name", "seg", "--version", "9", "--reason", "x",
                    "--params", str(repo / "params.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: seg version 9:")
