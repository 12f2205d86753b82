"""A real `mlflow models serve` process answers like predict."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.models import (
    free_port,
    metrics_file,
    register_params,
    wait_for_http,
)
from PIL import Image

from deeplab.data.palette import read_label_png
from deeplab.serving.predict import main as predict_main

PARAMS = register_params()


def _post(url: str, body: dict) -> dict:
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())



@pytest.mark.slow
def test_mlflow_models_serve_answers_like_predict(tracking, model_file, tmp_path, capsys):
    """A real `mlflow models serve` process on 127.0.0.1: nested uint8 lists and base64 PNG
    images in, label lists or palette PNGs out; the same masks as `predict`."""
    import base64
    import io

    from deeplab.serving.registry import register

    register(model_file, metrics_file(tracking, 0.5), PARAMS)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tracking / 'mlflow.db'}"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/seg@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server)
        rng = np.random.default_rng(4)
        image = rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        encoded = base64.b64encode(png.getvalue()).decode()
        url = f"http://127.0.0.1:{port}/invocations"
        as_lists = np.array(_post(url, {"inputs": image[None].tolist()})["predictions"], np.uint8)
        as_table = _post(url, {"dataframe_split": {"columns": ["image"], "data": [[encoded]]}})
        as_png = _post(url, {"dataframe_split": {"columns": ["image"], "data": [[encoded]]},
                             "params": {"output": "png"}})
    finally:
        server.terminate()
        server.wait(timeout=30)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert predict_main(["--model", "models:/seg@champion", "--input", str(tmp_path / "a.png"),
                         "--output", str(tmp_path / "out")]) == 0
    expected = read_label_png(tmp_path / "out/a.png.labels.png")
    assert as_lists.shape == (1, 45, 61) and np.array_equal(as_lists[0], expected)
    assert np.array_equal(np.array(as_table["predictions"][0]["labels"], np.uint8), expected)
    with Image.open(io.BytesIO(base64.b64decode(as_png["predictions"][0]["mask_png"]))) as mask:
        assert mask.mode == "P" and np.array_equal(np.array(mask), expected)
