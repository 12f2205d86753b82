"""What a registered version deploys: formats within deploy.max_drop of fp32, the serving
format checked, and deploy folders verified against their manifest."""

import json

import pytest

from deeplab.core.errors import ConfigError, RegistryError
from deeplab.core.schema import ServeConfig
from deeplab.serving.deploy import MANIFEST, deployment, read_manifest, sha256

ROWS = {"onnxruntime/fp32": {"miou": 0.80, "drop": 0.0},
        "onnxruntime/int8": {"miou": 0.78, "drop": 0.02},
        "openvino/bf16": {"miou": 0.799, "drop": 0.001}}


def folder(tmp_path):
    for name in ("model.onnx", "model.int8.onnx"):
        (tmp_path / name).write_bytes(name.encode())
    files = {name: sha256(tmp_path / name) for name in ("model.onnx", "model.int8.onnx")}
    (tmp_path / MANIFEST).write_text(json.dumps({"files": files, "formats": list(ROWS)}))
    return tmp_path


def test_formats_below_max_drop_are_left_out_and_their_files_with_them(tmp_path):
    kept = deployment(ServeConfig(), 0.01, folder(tmp_path), ROWS)
    assert set(kept.formats) == {"onnxruntime/fp32", "openvino/bf16"}
    assert set(kept.files) == {"model.onnx"}  # the int8 file goes with its format
    wider = deployment(ServeConfig(), 0.05, folder(tmp_path), ROWS)
    assert set(wider.files) == {"model.onnx", "model.int8.onnx"} and wider.digest != kept.digest


def test_a_serving_format_below_max_drop_or_unmeasured_is_one_line(tmp_path):
    with pytest.raises(RegistryError, match="register.serve: onnxruntime/int8 is 0.0200 below "
                                            "fp32, more than deploy.max_drop 0.01"):
        deployment(ServeConfig(runtime="onnxruntime", precision="int8"), 0.01, folder(tmp_path), ROWS)
    with pytest.raises(RegistryError, match="openvino/int8 is not among the measured"):
        deployment(ServeConfig(runtime="openvino", precision="int8"), 0.01, folder(tmp_path), ROWS)
    served = deployment(ServeConfig(runtime="openvino", precision="bf16"), 0.01, folder(tmp_path), ROWS)
    assert served.serve["runtime"] == "openvino" and "model.onnx" in served.serve["files"]


def test_a_deploy_folder_changed_after_the_stage_is_refused(tmp_path):
    path = folder(tmp_path)
    read_manifest(path)
    (path / "model.int8.onnx").write_bytes(b"swapped")
    with pytest.raises(ConfigError, match="model.int8.onnx: differs from the sha256"):
        read_manifest(path)
