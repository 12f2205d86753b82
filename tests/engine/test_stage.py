"""Training stages: seeded identical weights, code-aware resume, the same MLflow run after
kill -9, starting without COCO, transfer from any trained model."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers.data import (
    CRACKS,
    absolute,
    processed,
    tiny_training,
)
from helpers.models import (
    Evil,
)
from helpers.repo import REPO

from deeplab.core.config import load_params, parse_params
from deeplab.core.errors import (
    ConfigError,
    ModelFileError,
    UnsafeFileError,
)
from deeplab.core.schema import Params
from deeplab.model.files import read_model_file, save_model, state_digest
from deeplab.prepare.layouts import resolve_classes


def tiny_params(iterations: int = 3, checkpoint_every: int = 2, **runtime_overrides) -> Params:
    params = load_params(REPO / "params.yaml")
    return params.replace(
        model=params.model.replace(aspp_channels=16, decoder_channels=16),
        runtime=params.runtime.replace(workers=0, threads=1, **runtime_overrides),
        pretrain=params.pretrain.replace(iterations=iterations, batch_size=2, crop_size=33,
                                         checkpoint_every=checkpoint_every, val_every=0),
        mlflow=params.mlflow.replace(experiment="safety"))


RUN_STAGE = """
import json, sys
from pathlib import Path
from deeplab.core.config import parse_params
from deeplab.engine.stage import PRETRAIN, StageFiles, run_training_stage
params, train_list, val_list, out = parse_params(json.loads(sys.argv[1])), *map(Path, sys.argv[2:5])
run_training_stage(PRETRAIN, params, StageFiles(train_list, val_list, train_list.with_name("classes.json"),
                                                out / "m.pt", out / "c.ckpt", out / "reports"))
"""


def test_crafted_init_file_for_finetune_is_refused(tmp_path):
    from deeplab.engine.init import initial_model

    marker = tmp_path / "marker"
    torch.save({"config": {}, "state_dict": Evil(marker)}, tmp_path / "pretrain.pt")
    params = load_params(REPO / "params.yaml")
    with pytest.raises(UnsafeFileError):
        initial_model("finetune", params, 21, tmp_path / "pretrain.pt")
    assert not marker.exists()


def test_same_params_give_identical_weights(tmp_path, monkeypatch, tiny_train_csv, tiny_val_csv,
                                           tiny_classes):
    from deeplab.engine.stage import PRETRAIN, StageFiles, run_training_stage

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    models = []
    for k in range(2):
        torch.manual_seed(1000 + k)  # whatever the process did before must not matter
        out = tmp_path / f"run{k}"
        run_training_stage(PRETRAIN, tiny_params(), StageFiles(
            tiny_train_csv, tiny_val_csv, tiny_classes, out / "m.pt", out / "c.ckpt", out / "reports"))
        models.append(torch.load(out / "m.pt", weights_only=True)["state_dict"])
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])


def test_a_finished_checkpoint_of_other_code_is_not_resumed(tmp_path, monkeypatch, tiny_train_csv,
                                                            tiny_val_csv, tiny_classes):
    """DVC reruns a training stage when its code changed; the stage must then train anew,
    not pick up the old code's finished checkpoint (same settings, same data)."""
    from deeplab.engine import stage

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    files = stage.StageFiles(tiny_train_csv, tiny_val_csv, tiny_classes, out / "m.pt", out / "c.ckpt",
                             out / "reports")
    assert stage.run_training_stage(stage.PRETRAIN, tiny_params(), files)["resumed_from"] == 0
    assert stage.run_training_stage(stage.PRETRAIN, tiny_params(), files)["resumed_from"] == 3
    monkeypatch.setattr(stage, "code_signature", lambda: "edited code")
    assert stage.run_training_stage(stage.PRETRAIN, tiny_params(), files)["resumed_from"] == 0


def test_code_signature_follows_the_loaded_sources(tmp_path, monkeypatch):
    from deeplab.engine.checkpoints import code_signature

    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.import_module("pkgx.mod")
    try:
        before = code_signature("pkgx")
        assert code_signature("pkgx") == before
        (pkg / "mod.py").write_text("X = 2\n")
        assert code_signature("pkgx") != before
    finally:
        for name in ("pkgx.mod", "pkgx"):
            sys.modules.pop(name, None)


@pytest.mark.slow
def test_killed_stage_resumes_the_same_mlflow_run(tmp_path, tiny_train_csv, tiny_val_csv):
    from mlflow import MlflowClient

    params = tiny_params(iterations=120, checkpoint_every=10, log_every=1)
    env = {**os.environ, "DVC_ROOT": str(tmp_path), "TQDM_DISABLE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [sys.executable, "-c", RUN_STAGE, json.dumps(params.as_dict()), str(tiny_train_csv),
            str(tiny_val_csv), str(tmp_path / "out")]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (tmp_path / "out" / "c.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(tmp_path / "out" / "c.ckpt", weights_only=True)["iteration"]
    assert 0 < saved < 120, "the stage must be killed mid-way for this test"
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=300)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("safety")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["resumed_from"] == saved
    steps = {m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")}
    assert steps == set(range(1, 121))  # one continuous curve


def test_finetune_from_pretrain_without_coco_names_the_fix(tmp_path, monkeypatch):
    from deeplab.engine.init import initial_model
    from deeplab.engine.stage import skip_pretraining

    params = tiny_training(tmp_path, monkeypatch)
    classes = resolve_classes("folder", CRACKS, None, 255)
    skip_pretraining(params, classes, tmp_path / "pretrain.pt", tmp_path / "reports")
    with pytest.raises(ConfigError, match="finetune.init is 'pretrain' but the pretrain stage had no "
                                          "COCO data.*set finetune.init to scratch"):
        initial_model("finetune", params, 3, tmp_path / "pretrain.pt")


def test_transfer_from_a_21_class_model_loads_all_but_the_head_and_trains(tmp_path, monkeypatch):
    from deeplab.engine.init import build_model, initial_model
    from deeplab.engine.stage import FINETUNE, StageFiles, run_training_stage

    params = tiny_training(tmp_path, monkeypatch)
    torch.manual_seed(7)
    voc_model = build_model(params.model, 21)
    save_model(tmp_path / "voc.pt", voc_model)
    params = params.replace(finetune=params.finetune.replace(init=str(tmp_path / "voc.pt")))
    start = initial_model("finetune", params, 3, None)
    model, origin = start.model, start.origin
    assert start.key == state_digest(read_model_file(tmp_path / "voc.pt"), {})  # the init's digest
    theirs, ours = voc_model.state_dict(), model.state_dict()
    head = {k for k in ours if k.startswith("head.classifier.")}
    assert head == {"head.classifier.weight", "head.classifier.bias"}
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k not in head)
    assert ours["head.classifier.weight"].shape[0] == 3
    assert "2 tensors re-initialised" in origin

    out, _ = processed(tmp_path, monkeypatch, layout="folder", classes=CRACKS)
    metrics = run_training_stage(FINETUNE, params, StageFiles(
        absolute(out / "train.csv", tmp_path), absolute(out / "val.csv", tmp_path),
        out / "classes.json", tmp_path / "m.pt", tmp_path / "c.ckpt", tmp_path / "r"))
    assert metrics["iterations"] == 2
    assert torch.load(tmp_path / "m.pt", weights_only=True)["classes"]["names"] == CRACKS


def test_transfer_from_another_backbone_is_one_line_naming_both(tmp_path, monkeypatch):
    from deeplab.engine.init import initial_model

    params = tiny_training(tmp_path, monkeypatch)
    from deeplab.model import DeepLabV3Plus
    save_model(tmp_path / "r50.pt", DeepLabV3Plus(21, "resnet50", 16, aspp_channels=8,
                                                  decoder_channels=8))
    params = params.replace(finetune=params.finetune.replace(init=str(tmp_path / "r50.pt")))
    with pytest.raises(ModelFileError, match=r"finetune.init: .*r50.pt is a resnet50 model, this one "
                                             r"is mobilenet_v2; set model.backbone: resnet50"):
        initial_model("finetune", params, 3, None)


def test_transfer_from_a_registered_model(tmp_path, monkeypatch):
    from deeplab.engine.init import build_model, initial_model
    from deeplab.serving.registry import register

    params = tiny_training(tmp_path, monkeypatch)
    torch.manual_seed(3)
    source = build_model(params.model, 21)
    save_model(tmp_path / "voc.pt", source)
    (tmp_path / "metrics.json").write_text(json.dumps({"miou": 0.5}))
    reg = parse_params({"seed": 0, "mlflow": {"experiment": "own-data"},
                        "register": {"model_name": "voc", "min_miou": 0.0, "inference": {
                            "output_stride": 16, "scales": [1.0], "flip": False}}},
                       sections=("register", "mlflow"))
    register(tmp_path / "voc.pt", tmp_path / "metrics.json", reg)
    params = params.replace(finetune=params.finetune.replace(init="models:/voc@champion"))
    from deeplab.tracking import registry as registered

    downloads = []
    real = registered.load_registered
    monkeypatch.setattr(registered, "load_registered", lambda uri: downloads.append(uri) or real(uri))
    start = initial_model("finetune", params, 3, None)
    model, origin = start.model, start.origin
    assert downloads == ["models:/voc@champion"]  # read and hashed once; the checkpoint keeps its digest
    assert start.key == state_digest(read_model_file(tmp_path / "voc.pt"), {})
    assert origin.startswith("model models:/voc@champion")
    ours, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith("head.classifier."))


def test_an_init_file_that_loads_no_tensor_is_refused_naming_the_fix(tmp_path, monkeypatch):
    """A model file of the right backbone whose tensor names match nothing (saved from a
    DataParallel wrapper, say) would have trained from scratch with exit 0."""
    from deeplab.core.io import save_torch
    from deeplab.engine.init import build_model, initial_model

    params = tiny_training(tmp_path, monkeypatch)
    net = build_model(params.model, 21)
    save_torch(tmp_path / "wrapped.pt", {"config": net.config, "info": {},
                                         "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}})
    params = params.replace(finetune=params.finetune.replace(init=str(tmp_path / "wrapped.pt")))
    with pytest.raises(ModelFileError, match=r"finetune.init: .*wrapped.pt shares no tensor with this "
                                             r"model .*set finetune.init: scratch"):
        initial_model("finetune", params, 3, None)
