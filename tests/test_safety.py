"""Safe by default: no code runs from a model file, no user data is lost, failures are one line.

Each test reproduces a way a careless or hostile user could hurt themselves with the old
pipeline (crafted model files, source switches, clobbering outputs, kill -9, concurrent
registrations) and checks what happens now.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from deeplab.model_files import read_model_file, save_model
from deeplab.cli import stage_main
from deeplab.config import (ConfigError, Params, PreprocessConfig, SyntheticData, load_params,
                            parse_params)
from deeplab.errors import DeeplabError, ModelFileError, UnsafeFileError
from deeplab.io import atomic_dir, remove_stale_temps, write_json
from deeplab.model import DeepLabV3Plus
from deeplab.serving.predict import main as predict_main
from deeplab.serving.predict import read_rgb
from deeplab.engine.checkpoints import load_checkpoint
from deeplab.engine.loop import train
from test_train import RUNTIME, SCHED, SETTINGS

REPO = Path(__file__).resolve().parents[1]


class Evil:
    """Unpickling this runs a shell command: what a crafted model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def tiny_net(seed: int = 0) -> DeepLabV3Plus:
    torch.manual_seed(seed)
    return DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=16, decoder_channels=16).eval()


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "m.pt"
    save_model(path, tiny_net())
    return path


def image_folder(path: Path, names: dict[str, tuple[int, int]]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in names.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path / name)
    return path


# --- Security -------------------------------------------------------------------------------

def test_crafted_model_file_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"config": {}, "state_dict": Evil(marker)}, evil)
    inputs = image_folder(tmp_path / "in", {"x.png": (40, 40)})

    code = predict_main(["--model", str(evil), "--input", str(inputs), "--output",
                         str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(evil) in err[0] and "refused" in err[0]
    for load in (read_model_file,):  # evaluate, register and finetune's init read through it
        with pytest.raises(UnsafeFileError, match="refused"):
            load(evil)
    with pytest.raises(UnsafeFileError, match="delete it to train from scratch"):
        load_checkpoint(evil, "any", 10)  # a crafted resume checkpoint
    assert not marker.exists()


def test_crafted_init_file_for_finetune_is_refused(tmp_path):
    from deeplab.engine.stage import initial_model

    marker = tmp_path / "marker"
    torch.save({"config": {}, "state_dict": Evil(marker)}, tmp_path / "pretrain.pt")
    params = load_params(REPO / "params.yaml")
    with pytest.raises(UnsafeFileError):
        initial_model("finetune", params, 21, tmp_path / "pretrain.pt")
    assert not marker.exists()


def test_checkpoint_round_trips_through_weights_only_load(tmp_path, tiny_train_csv):
    from deeplab.data.dataset import SegmentationDataset, read_list

    ds = SegmentationDataset(read_list(tiny_train_csv), 33)
    train(tiny_net(), ds, SCHED.replace(iterations=2, checkpoint_every=1), SETTINGS, RUNTIME,
          tmp_path / "c.ckpt", 0, {"x": 1}, run_id="abc")
    state = torch.load(tmp_path / "c.ckpt", weights_only=True)  # raises if anything is pickled
    assert state["iteration"] == 2 and state["run_id"] == "abc"


# --- Data that must never be lost -----------------------------------------------------------

def test_predict_never_overwrites_inputs_or_its_own_results(tmp_path, model_file, capsys):
    model = model_file
    folder = image_folder(tmp_path / "photos", {"a.jpg": (40, 50), "a.png": (30, 30)})
    photo = (folder / "a.png").read_bytes()

    out = tmp_path / "out"
    assert predict_main(["--model", str(model), "--input", str(folder), "--output", str(out),
                         "--device", "cpu"]) == 0
    assert "2 of 2" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "a.jpg.labels.png", "a.jpg.overlay.jpg", "a.png.labels.png", "a.png.overlay.jpg"]
    # Into the input folder itself: a.png (a photo) stays, results sit beside it, and they
    # are not taken as inputs by the next run.
    for _ in range(2):
        assert predict_main(["--model", str(model), "--input", str(folder), "--output",
                             str(folder), "--device", "cpu"]) == 0
        assert "2 of 2" in capsys.readouterr().out
        assert (folder / "a.png").read_bytes() == photo and len(list(folder.iterdir())) == 6


def test_predict_refuses_outputs_that_reach_an_input(tmp_path, model_file, capsys):
    model = model_file
    folder = image_folder(tmp_path / "p", {"a.jpg": (30, 30), "b.png": (30, 30)})
    photo = (folder / "b.png").read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg.labels.png").symlink_to(folder / "b.png")  # writing it would clobber b.png
    code = predict_main(["--model", str(model), "--input", str(folder), "--output", str(out),
                         "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "would overwrite an input image" in err[0]
    assert (folder / "b.png").read_bytes() == photo and not (out / "a.jpg.overlay.jpg").exists()
    code = predict_main(["--model", str(model), "--input", str(folder / "a.jpg"),
                         "--output", str(folder / "b.png"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "exists and is not a folder" in err[0]
    assert (folder / "b.png").read_bytes() == photo


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path, dead_pid):
    ckpt = tmp_path / "checkpoints" / "pretrain.ckpt"
    ckpt.parent.mkdir()
    stale_file = ckpt.parent / f".pretrain.ckpt.{dead_pid}-x1y2.tmp"
    live_file = ckpt.parent / f".pretrain.ckpt.{os.getpid()}-a1b2.tmp"  # a run still going on
    stale_file.write_bytes(b"half")
    live_file.write_bytes(b"half")
    assert load_checkpoint(ckpt, "key", 10) is None
    assert not stale_file.exists() and live_file.exists()

    processed = tmp_path / "processed"
    stale_dir = tmp_path / f".processed.{dead_pid}-q9.tmp"
    (stale_dir / "masks").mkdir(parents=True)
    with atomic_dir(processed) as tmp:
        (tmp / "ok").write_text("1")
    assert not stale_dir.exists() and (processed / "ok").is_file()
    assert remove_stale_temps(processed) == []


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "metrics.json", {"miou": 1})
        with atomic_dir(tmp_path / "processed") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "processed").stat().st_mode) == 0o755


def test_switching_source_keeps_downloads_and_local_changes_are_seen(tmp_path, monkeypatch):
    """download -> synthetic -> download: the archives and extracted datasets stay; with
    `local`, the manifest (a DVC output preprocess depends on) changes when a file does."""
    import hashlib
    import tarfile
    import zipfile

    from test_download import serve
    from deeplab.data import fetch as fetch_mod
    from deeplab.data.synthetic import generate

    gen = tmp_path / "gen"
    generate(gen, SyntheticData(seed=0, image_size=40, coco_train_images=2, coco_val_images=1,
                               train_images=2, val_images=1, sbd_images=1))
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "voc.tar", "w") as tf:
        tf.add(gen / "VOC2012", "VOCdevkit/VOC2012")
    with tarfile.open(www / "sbd.tgz", "w:gz") as tf:
        tf.add(gen / "SBD", "benchmark_RELEASE")
    for name, sub in (("train.zip", "train2017"), ("val.zip", "val2017"), ("ann.zip", "annotations")):
        with zipfile.ZipFile(www / name, "w") as zf:
            for f in (gen / "coco" / sub).iterdir():
                zf.write(f, f"{sub}/{f.name}")
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in www.iterdir()}
    names = {"voc": "voc.tar", "sbd": "sbd.tgz", "coco_train": "train.zip", "coco_val": "val.zip",
             "coco_ann": "ann.zip"}
    catalogue = {k: (names[k], "unused", md5[names[k]], *v[3:]) for k, v in fetch_mod.SOURCES.items()}
    monkeypatch.setattr(fetch_mod, "SOURCES", catalogue)  # the catalogue of tiny archives
    monkeypatch.chdir(tmp_path)
    data = load_params(REPO / "params.yaml").data
    with serve(www) as url:
        downloaded = data.replace(source="download",
                                  download=data.download.replace(mirror=url, retries=0))
        first = fetch_mod.fetch(downloaded, Path("data/raw"))
        before = sorted(str(p) for p in Path("data/downloads").rglob("*"))
        assert (Path(first["root"]) / "JPEGImages").is_dir()
        fetch_mod.fetch(data.replace(source="synthetic"), Path("data/raw"))
        assert sorted(str(p) for p in Path("data/downloads").rglob("*")) == before
        assert (Path("data/downloads/archives") / "voc.tar").is_file()
        again = fetch_mod.fetch(downloaded, Path("data/raw"))
        assert again == first  # nothing downloaded or extracted again, same manifest

    user = {"source": "local", "root": str(gen / "VOC2012"), "coco_root": str(gen / "coco"),
            "sbd_root": None}
    one = fetch_mod.fetch(data.replace(**user), Path("data/raw"))
    manifest = Path("data/raw/manifest.json")
    mtime = manifest.stat().st_mtime_ns
    assert fetch_mod.fetch(data.replace(**user), Path("data/raw")) == one
    assert manifest.stat().st_mtime_ns == mtime  # unchanged data: not even rewritten
    mask = next((gen / "VOC2012" / "SegmentationClass").iterdir())
    os.utime(mask, ns=(1, 1))  # touched, same bytes: the content signature does not move
    assert fetch_mod.fetch(data.replace(**user), Path("data/raw"))["signature"] == one["signature"]
    mask.write_bytes(mask.read_bytes() + b"\0")  # an edited mask
    assert fetch_mod.fetch(data.replace(**user), Path("data/raw"))["signature"] != one["signature"]


# --- Reproducibility and the registry -------------------------------------------------------

def tiny_params(iterations: int = 3, checkpoint_every: int = 2, **runtime_overrides) -> Params:
    params = load_params(REPO / "params.yaml")
    return params.replace(
        model=params.model.replace(aspp_channels=16, decoder_channels=16),
        runtime=params.runtime.replace(workers=0, threads=1, **runtime_overrides),
        pretrain=params.pretrain.replace(iterations=iterations, batch_size=2, crop_size=33,
                                         checkpoint_every=checkpoint_every, val_every=0),
        mlflow=params.mlflow.replace(experiment="safety"))


def test_same_params_give_identical_weights(tmp_path, monkeypatch, tiny_train_csv, tiny_val_csv,
                                           tiny_classes):
    from deeplab.engine.stage import run_training_stage

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    models = []
    for k in range(2):
        torch.manual_seed(1000 + k)  # whatever the process did before must not matter
        out = tmp_path / f"run{k}"
        run_training_stage("pretrain", tiny_params(), tiny_train_csv, tiny_val_csv, out / "m.pt",
                           out / "c.ckpt", out / "reports", tiny_classes)
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
    args = (tiny_train_csv, tiny_val_csv, out / "m.pt", out / "c.ckpt", out / "reports", tiny_classes)
    assert stage.run_training_stage("pretrain", tiny_params(), *args)["resumed_from"] == 0
    assert stage.run_training_stage("pretrain", tiny_params(), *args)["resumed_from"] == 3
    monkeypatch.setattr(stage, "code_signature", lambda: "edited code")
    assert stage.run_training_stage("pretrain", tiny_params(), *args)["resumed_from"] == 0


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


RUN_STAGE = """
import json, sys
from pathlib import Path
from deeplab.config import parse_params
from deeplab.engine.stage import run_training_stage
params, train_list, val_list, out = parse_params(json.loads(sys.argv[1])), *map(Path, sys.argv[2:5])
run_training_stage("pretrain", params, train_list, val_list, out / "m.pt", out / "c.ckpt",
                   out / "reports", train_list.with_name("classes.json"))
"""


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


def _register_args(tmp_path: Path, model: Path, metrics: Path, name: str = "seg") -> list[str]:
    code = ("import json, sys; from pathlib import Path; from deeplab.serving.registry import register\n"
            "from deeplab.config import parse_params\n"
            "p = parse_params(json.loads(sys.argv[3]), sections=('register', 'mlflow'))\n"
            "print(json.dumps(register(Path(sys.argv[1]), Path(sys.argv[2]), p)))\n")
    params = {"seed": 0, "mlflow": {"experiment": "reg"},
              "register": {"model_name": name, "min_miou": 0.0,
                           "inference": {"output_stride": 16, "scales": [1.0], "flip": False}}}
    return [sys.executable, "-c", code, str(model), str(metrics), json.dumps(params)]


def test_one_sha256_is_one_version_under_concurrency_and_after_a_crash(tmp_path):
    from mlflow import MlflowClient

    from deeplab.evaluation.inference import InferenceStrategy
    from deeplab.serving.registry import model_digest

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
    client.create_model_version("seg", versions[0].source, run.info.run_id,
                                tags={"model_sha256": digest, "val_miou": "0.4"})
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


# --- Inputs ---------------------------------------------------------------------------------

def test_voc_ids_in_train_and_val_duplicates_and_bad_coco_references(tmp_path, monkeypatch):
    import pandas as pd

    from deeplab.data.preprocess import preprocess
    from deeplab.data.samples import BadSampleError
    from deeplab.data.synthetic import generate

    raw = tmp_path / "raw"
    generate(raw, SyntheticData(seed=0, image_size=40, coco_train_images=3, coco_val_images=2,
                               train_images=4, val_images=2, sbd_images=0))
    monkeypatch.chdir(tmp_path)
    from deeplab.data.classes import ClassList
    roots = {"coco_root": str(raw / "coco"), "root": str(raw / "VOC2012"), "sbd_root": None,
             "layout": "voc", "classes": ClassList.default(21).as_dict()}
    cfg = PreprocessConfig(min_pixels=0, hard_classes=[], on_bad_sample="error", workers=1)
    lists = raw / "VOC2012/ImageSets/Segmentation"
    val_id = lists.joinpath("val.txt").read_text().split()[0]
    lists.joinpath("train.txt").write_text(lists.joinpath("train.txt").read_text() + f"{val_id}\n")
    summary = preprocess(roots, tmp_path / "p1", cfg)
    train_ids = pd.read_csv(tmp_path / "p1/train.csv", dtype=str)["id"].tolist()
    assert val_id not in train_ids and len(train_ids) == 4 and summary["removed_train_in_val"] == 1

    first = lists.joinpath("train.txt").read_text().split()[0]
    lists.joinpath("train.txt").write_text(lists.joinpath("train.txt").read_text() + f"{first}\n")
    with pytest.raises(BadSampleError, match=rf"train.txt: duplicate ids {first}"):
        preprocess(roots, tmp_path / "p2", cfg)
    skipped = preprocess(roots, tmp_path / "p3", cfg.replace(on_bad_sample="skip"))
    assert skipped["skipped_bad_samples"] == 1 and len(pd.read_csv(tmp_path / "p3/train.csv")) == 4

    ann_file = raw / "coco/annotations/instances_val2017.json"
    data = json.loads(ann_file.read_text())
    good = json.dumps(data)
    data["annotations"].append({**data["annotations"][0], "id": 999001, "image_id": 424242})
    ann_file.write_text(json.dumps(data))
    with pytest.raises(BadSampleError, match=r"1 annotations of missing images: 999001 \(image 424242\)"):
        preprocess(roots, tmp_path / "p4", cfg)
    data = json.loads(good)
    data["annotations"].append({**data["annotations"][0], "id": 999002, "category_id": 4242})
    data["images"].append(data["images"][0])
    ann_file.write_text(json.dumps(data))
    with pytest.raises(BadSampleError, match="duplicate image ids"):
        preprocess(roots, tmp_path / "p5", cfg)
    skipped = preprocess(roots, tmp_path / "p6", cfg.replace(on_bad_sample="skip"))
    assert skipped["skipped_bad_samples"] == 3  # duplicate image, unknown category, train dup
    assert any("unknown category ids: 999002 (category 4242)" in s for s in skipped["skipped"])
    assert not (tmp_path / "p4").exists() and not (tmp_path / "p5").exists()


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 32).astype(np.uint16).reshape(32, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
    rgb = read_rgb(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 64, 3)
    assert rgb.min() == 0 and rgb.max() == 255
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert len(np.unique(rgb)) > 200  # not saturated at 255 from the second pixel on


# --- One line, exit 2, never a traceback ----------------------------------------------------

def test_truncated_checkpoint_starts_over_with_a_warning(tmp_path, tiny_train_csv, caplog):
    from deeplab.data.dataset import SegmentationDataset, read_list

    ckpt = tmp_path / "c.ckpt"
    torch.save({"fingerprint": "x", "model": torch.zeros(1000)}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:200])  # cut mid-file
    assert load_checkpoint(ckpt, "x", 10) is None
    assert any(str(ckpt) in r.message and "truncated or corrupt" in r.message for r in caplog.records)
    result = train(tiny_net(), SegmentationDataset(read_list(tiny_train_csv), 33),
                   SCHED.replace(iterations=1, checkpoint_every=1), SETTINGS, RUNTIME, ckpt, 0, {})
    assert result.resumed_from == 0 and torch.load(ckpt, weights_only=True)["iteration"] == 1


def test_decompression_bomb_is_named_and_skipped(tmp_path, model_file, capsys, monkeypatch):
    model = model_file
    folder = image_folder(tmp_path / "in", {"ok.png": (30, 30)})
    Image.new("1", (3000, 3000)).save(folder / "bomb.png")  # 9 Mpx, a few kB on disk
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # bomb = over 2x this
    code = predict_main(["--model", str(model), "--input", str(folder), "--output",
                         str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "bomb.png: skipped, too many pixels" in err and "Traceback" not in err
    assert (tmp_path / "out" / "ok.png.labels.png").is_file()


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


def test_stage_main_keeps_tracebacks_of_programming_errors():
    @stage_main
    def user_error():
        raise ConfigError("pretrain.lr: expected a positive number")

    @stage_main
    def bug():
        raise ValueError("a bug in our code")

    with pytest.raises(SystemExit) as exit_info:
        user_error()
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="a bug in our code"):
        bug()
    assert issubclass(ModelFileError, DeeplabError)
