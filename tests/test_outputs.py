"""Every write target of the stages, export, deploy and the downloads: on a read-only
filesystem each is one line naming the place (an OutputError, exit status 2 on the command
line), never a traceback."""

import subprocess
import sys

import numpy as np
import pytest
from helpers.data import OWN_PRE, data_config, processed, tiny_training
from helpers.models import model_and_metrics
from helpers.repo import REPO

from deeplab.core.errors import OutputError

READ_ONLY = r"cannot write this (file|folder): read-only file system"


@pytest.fixture
def read_only(small_disk):
    return small_disk(64, read_only=True)


def test_data_stages(read_only, tmp_path, monkeypatch):
    from deeplab.prepare.download import download
    from deeplab.prepare.fetch import fetch
    from deeplab.prepare.preprocess import preprocess

    with pytest.raises(OutputError, match=rf"{read_only}/raw.*: {READ_ONLY}"):
        fetch(data_config(layout="folder"), read_only / "raw")
    out, manifest = processed(tmp_path, monkeypatch, layout="folder")
    with pytest.raises(OutputError, match=rf"{read_only}/processed: {READ_ONLY}"):
        preprocess(manifest, read_only / "processed", OWN_PRE)
    with pytest.raises(OutputError, match=rf"{read_only}/downloads: {READ_ONLY}"):
        download("http://127.0.0.1:9/x.tar", read_only / "downloads" / "x.tar", "0" * 32)


def test_training_stage_reports_model_and_checkpoint(read_only, tmp_path, monkeypatch):
    from helpers.data import absolute

    from deeplab.engine.stage import FINETUNE, StageFiles, run_training_stage

    out, _ = processed(tmp_path, monkeypatch, layout="folder")
    params = tiny_training(tmp_path, monkeypatch)
    params = params.replace(finetune=params.finetune.replace(init="scratch"))
    lists = absolute(out / "train.csv", tmp_path), absolute(out / "val.csv", tmp_path)
    for target in ("checkpoint", "model", "reports"):
        paths = {"model": tmp_path / "m.pt", "checkpoint": tmp_path / "c.ckpt",
                 "reports": tmp_path / "r"} | {target: read_only / target}
        with pytest.raises(OutputError, match=rf"{read_only}/{target}.*: {READ_ONLY}"):
            run_training_stage(FINETUNE, params, StageFiles(*lists, out / "classes.json", **paths))


def test_evaluate_deploy_and_export(read_only, tmp_path, monkeypatch):
    from helpers.data import absolute
    from helpers.repo import run_stage

    from deeplab.core.config import load_params
    from deeplab.serving.quantize import quantize_int8

    model, _ = model_and_metrics(tmp_path, 0, 0.5)
    out, _ = processed(tmp_path, monkeypatch, layout="folder")  # VOC's 21 classes, as the model
    params = load_params(REPO / "params.yaml")
    params = params.replace(evaluate=params.evaluate.replace(output_strides=[16], scales=[1.0],
                                                             flip=[False]), ablations={})
    with pytest.raises(OutputError, match=rf"{read_only}/reports: {READ_ONLY}"):
        run_stage("evaluate", params, model=model, val_list=absolute(out / "val.csv", tmp_path),
                  reports=read_only / "reports", classes=out / "classes.json")
    with pytest.raises(OutputError, match=rf"{read_only}/m.int8.onnx: {READ_ONLY}"):
        quantize_int8(tmp_path / "m.onnx", read_only / "m.int8.onnx",
                      [np.zeros((1, 33, 33, 3), np.uint8)])
    cli = subprocess.run([sys.executable, "-m", "deeplab.serving.export", "--model", str(model),
                          "--format", "onnx", "--output", str(read_only / "m.onnx")],
                         capture_output=True, text=True, timeout=600)
    assert cli.returncode == 2
    assert len(cli.stderr.strip().splitlines()) == 1 and "read-only file system" in cli.stderr
