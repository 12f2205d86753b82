"""Registration: one sha256 one version, aliases, the pyfunc model, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.models import (
    metrics_file,
    reference_labels,
    register_params,
    tiny_net,
)
from helpers.repo import REPO

from deeplab.core.config import (
    parse_params,
)
from deeplab.core.errors import (
    RegistryError,
)
from deeplab.model.files import read_model_file, save_model, state_digest
from deeplab.model.inference import InferenceStrategy

PARAMS = register_params()


def model_digest(path, strategy):
    """What the registry hashes for a model file."""
    return state_digest(read_model_file(path), strategy)
PARAMS_FILE = yaml.safe_load((REPO / "params.yaml").read_text())


def _register_args(tmp_path: Path, model: Path, metrics: Path, name: str = "seg") -> list[str]:
    code = ("import json, sys; from pathlib import Path; from deeplab.serving.registry import register\n"
            "from deeplab.core.config import parse_params\n"
            "p = parse_params(json.loads(sys.argv[3]), sections=('register', 'mlflow'))\n"
            "print(json.dumps(register(Path(sys.argv[1]), Path(sys.argv[2]), p)))\n")
    params = {"seed": 0, "mlflow": {"experiment": "reg"},
              "register": {"model_name": name, "min_miou": 0.0,
                           "inference": {"output_stride": 16, "scales": [1.0], "flip": False}}}
    return [sys.executable, "-c", code, str(model), str(metrics), json.dumps(params)]


def test_model_digest_covers_weights_config_and_strategy_not_metadata(tmp_path):
    strategy = InferenceStrategy(16).as_dict()
    save_model(tmp_path / "a.pt", tiny_net(), run_id="one")
    save_model(tmp_path / "b.pt", tiny_net(), run_id="two", git_commit="abc")
    digest = model_digest(tmp_path / "a.pt", strategy)
    assert model_digest(tmp_path / "b.pt", strategy) == digest
    assert model_digest(tmp_path / "a.pt", InferenceStrategy(8).as_dict()) != digest
    net = tiny_net()
    with torch.no_grad():
        net.head.classifier.bias[0] += 1e-6  # one value of one tensor
    save_model(tmp_path / "c.pt", net, run_id="one")
    assert model_digest(tmp_path / "c.pt", strategy) != digest


@pytest.mark.slow
def test_registry_aliases_noop_and_pyfunc_in_fresh_process(tracking, model_file):
    from deeplab.serving.registry import register

    first = register(model_file, metrics_file(tracking, 0.5), PARAMS)
    assert first == {"name": "seg", "version": 1, "new": True, "aliases": ["champion"], "miou": 0.5}
    again = register(model_file, metrics_file(tracking, 0.5), PARAMS)
    assert again["new"] is False and again["version"] == 1 and again["aliases"] == ["champion"]
    retrained = tracking / "retrained.pt"  # the same weights from another run: same version
    save_model(retrained, tiny_net(), stage="finetune", run_id="another-run", git_commit="abc")
    assert retrained.read_bytes() != model_file.read_bytes()
    assert register(retrained, metrics_file(tracking, 0.5), PARAMS)["version"] == 1

    worse = tracking / "worse.pt"
    save_model(worse, tiny_net(1), stage="finetune")
    assert register(worse, metrics_file(tracking, 0.4), PARAMS)["aliases"] == ["challenger"]
    better = tracking / "better.pt"
    save_model(better, tiny_net(2), stage="finetune")
    assert register(better, metrics_file(tracking, 0.6), PARAMS) == {
        "name": "seg", "version": 3, "new": True, "aliases": ["champion"], "miou": 0.6}

    # A fresh interpreter that has never imported deeplab: the package travels with the model.
    script = (
        "import sys, numpy as np, mlflow.pyfunc\n"
        "assert 'deeplab' not in sys.modules\n"
        f"mlflow.set_tracking_uri('sqlite:///{tracking / 'mlflow.db'}')\n"
        "m = mlflow.pyfunc.load_model('models:/seg@champion')\n"
        "x = np.random.default_rng(3).integers(0, 256, (2, 45, 61, 3), dtype=np.uint8)\n"
        "y = m.predict(x)\n"
        "np.save(sys.argv[1], x); np.save(sys.argv[2], y)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, str(tracking / "x.npy"), str(tracking / "y.npy")],
                          cwd="/", env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    x, y = np.load(tracking / "x.npy"), np.load(tracking / "y.npy")
    assert y.shape == (2, 45, 61) and y.dtype == np.uint8
    champion = tiny_net(2)
    assert np.array_equal(y[1], reference_labels(champion, x[1]))


@pytest.mark.slow
def test_one_sha256_is_one_version_under_concurrency_and_after_a_crash(tmp_path):
    from mlflow import MlflowClient

    from deeplab.model.inference import InferenceStrategy
    model, metrics = tmp_path / "m.pt", tmp_path / "metrics.json"
    save_model(model, tiny_net())
    metrics.write_text(json.dumps({"miou": 0.5}))
    env = {**os.environ, "DVC_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [subprocess.Popen(_register_args(tmp_path, model, metrics), env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)  # model sources (models:/m-...) resolve through the global URI
    client = MlflowClient(uri)
    versions = client.search_model_versions("name='seg'")
    assert len(versions) == 1 and {r["version"] for r in results} == {1}
    assert sorted(r["new"] for r in results) == [False, False, True]
    assert int(client.get_model_version_by_alias("seg", "champion").version) == 1

    # A crash right after the version row was created: tagged, but no alias yet.
    other = tmp_path / "other.pt"
    save_model(other, tiny_net(1))
    digest = model_digest(other, InferenceStrategy(16).as_dict())  # as the registry hashes it
    run = client.create_run(client.get_experiment_by_name("reg").experiment_id)
    from deeplab.core.schema import ServeConfig
    from deeplab.serving.deploy import deployment

    served = deployment(ServeConfig(), 0.01, None, {}).digest  # torch fp32, no files
    client.create_model_version("seg", versions[0].source, run.info.run_id,
                                tags={"model_sha256": digest, "deploy_sha256": served,
                                      "val_miou": "0.4"})
    metrics.write_text(json.dumps({"miou": 0.4}))
    out = subprocess.run(_register_args(tmp_path, other, metrics), env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["version"] == 2 and result["new"] is False and result["aliases"] == ["challenger"]
    assert len(client.search_model_versions("name='seg'")) == 2
    mlflow.set_tracking_uri(None)


def test_registered_model_is_not_pickled(tmp_path, monkeypatch):
    from mlflow.models import Model

    from deeplab.serving.registry import register

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model, metrics = tmp_path / "m.pt", tmp_path / "metrics.json"
    save_model(model, tiny_net())
    metrics.write_text(json.dumps({"miou": 0.5}))
    params = parse_params(json.loads(_register_args(tmp_path, model, metrics)[-1]),
                          sections=("register", "mlflow"))
    register(model, metrics, params)
    import mlflow
    local = Path(mlflow.artifacts.download_artifacts("models:/seg@champion", dst_path=str(tmp_path / "dl")))
    flavors = Model.load(str(local)).flavors
    assert set(flavors) == {"python_function"} and "model_code_path" in flavors["python_function"]
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pickle"))
    weights = local / flavors["python_function"]["artifacts"]["model_file"]["path"]
    torch.load(weights, weights_only=True)
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_register_errors_are_one_line(tmp_path, monkeypatch, capsys):
    script = REPO / "pipeline" / "register.py"
    work = tmp_path / "repo"
    (work / "models").mkdir(parents=True)
    (work / "reports").mkdir()
    save_model(work / "models/finetune.pt", tiny_net())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "DVC_ROOT": str(work), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)

    def run(extra_env=None):
        proc = subprocess.run([sys.executable, str(script), "--model", "models/finetune.pt",
                               "--metrics", "reports/metrics.json", "--out", "reports/registry.json"],
                              cwd=work, env={**env, **(extra_env or {})},
                              capture_output=True, text=True, timeout=300)
        lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert len(lines) == 1
        return lines[0]

    (work / "reports/metrics.json").write_text(json.dumps({"pixel_acc": 0.9}))
    assert "reports/metrics.json: no 'miou' value" in run()
    (work / "reports/metrics.json").write_text(json.dumps({"miou": 0.5}))
    assert "tracking server http://127.0.0.1:9 is not reachable" in run(
        {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert "tracking store sqlite:////proc/mlflow.db: /proc is not writable" in run(
        {"MLFLOW_TRACKING_URI": "sqlite:////proc/mlflow.db"})
    params["register"]["model_name"] = "it's"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert "register.model_name: expected a name of letters" in run()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1.5", "-0.1", "true", '"0.7"'])
def test_register_refuses_a_miou_that_is_not_a_number_in_0_1(tmp_path, value):
    from deeplab.serving.registry import read_miou

    path = tmp_path / "metrics.json"
    path.write_text('{"miou": %s}' % value)
    with pytest.raises(RegistryError, match="'miou' must be a number in"):
        read_miou(path)


@pytest.mark.slow
def test_register_onto_a_full_disk_names_the_cause_in_one_line(tmp_path, small_disk):
    """mlflow.db on a full disk: the one line says the disk is full (SQLite's own cause), not
    SQLAlchemy's 'Query-invoked autoflush' wrapper."""
    full_disk = small_disk(8192)  # an empty MLflow store takes about 1 MB
    work = tmp_path / "repo"
    (work / "reports").mkdir(parents=True)
    save_model(work / "finetune.pt", tiny_net())
    (work / "reports/metrics.json").write_text(json.dumps({"miou": 0.5}))
    (work / "params.yaml").write_text(yaml.safe_dump(PARAMS_FILE))
    env = {**os.environ, "DVC_ROOT": str(full_disk), "MLFLOW_TRACKING_URI":
           f"sqlite:///{full_disk / 'mlflow.db'}", "TQDM_DISABLE": "1"}
    # Create the store while there is room, then fill the disk.
    script = ("import mlflow; from deeplab.tracking.store import setup; setup('deeplabv3plus')")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=work,
                   capture_output=True, timeout=300)
    free = os.statvfs(full_disk).f_bavail * os.statvfs(full_disk).f_frsize
    (full_disk / "filler").write_bytes(b"\0" * free)
    proc = subprocess.run([sys.executable, str(REPO / "pipeline/register.py"), "--model",
                           "finetune.pt", "--metrics", "reports/metrics.json", "--out",
                           "reports/registry.json"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[:3000]
    assert len(lines) == 1 and ("disk is full" in lines[0] or "no space left" in lines[0]), lines
    assert "autoflush" not in lines[0]
