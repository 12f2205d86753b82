"""A real `mlflow models serve` process answers like predict."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import servers
from helpers.models import (
    free_port,
    metrics_file,
    reference_probs,
    register_params,
    tiny_net,
    wait_for_http,
)
from PIL import Image

from deeplab.data.palette import read_label_png
from deeplab.serving.predict import main as predict_main
from deeplab.uncertainty.confidence import read_confidence_png

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

    metrics = metrics_file(tracking, 0.5)
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "temperature": 2.0}))
    register(model_file, metrics, PARAMS)  # with evaluate's calibration temperature
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tracking / 'mlflow.db'}"}
    server = servers.start(
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
        as_conf = _post(url, {"dataframe_split": {"columns": ["image"], "data": [[encoded]]},
                              "params": {"output": "confidence", "confidence": "margin"}})
        probs_npz = _post(url, {"inputs": image[None].tolist(),
                                "params": {"output": "probabilities"}})["predictions"]
        # A 3000 x 3000 photo's probabilities: windows and a uint8 answer bound the worker's
        # memory (its peak, from /proc, under 1.5 GB; C x H x W floats as lists took 6 GB).
        before = servers.peak_rss(server.pid)
        photo = io.BytesIO()
        Image.fromarray(np.random.default_rng(5).integers(0, 256, (3000, 3000, 3), np.uint8)) \
            .save(photo, format="JPEG", quality=80)
        large = _post(url, {"dataframe_split": {"columns": ["image"], "data": [[
            base64.b64encode(photo.getvalue()).decode()]]}, "params": {"output": "probabilities"}})
        peak = servers.peak_rss(server.pid)
    finally:
        servers.stop(server)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert predict_main(["--model", "models:/seg@champion", "--input", str(tmp_path / "a.png"),
                         "--output", str(tmp_path / "out")]) == 0
    expected = read_label_png(tmp_path / "out/a.png.labels.png")
    assert as_lists.shape == (1, 45, 61) and np.array_equal(as_lists[0], expected)
    assert np.array_equal(np.array(as_table["predictions"][0]["labels"], np.uint8), expected)
    with Image.open(io.BytesIO(base64.b64decode(as_png["predictions"][0]["mask_png"]))) as mask:
        assert mask.mode == "P" and np.array_equal(np.array(mask), expected)
    # Calibrated probabilities: softmax(logits / 2) of the same network, computed directly;
    # served compactly, uint8 x 255 in a compressed .npz per image.
    direct = (reference_probs(tiny_net(), image).log() / 2.0).softmax(0).numpy()
    assert len(probs_npz) == 1 and set(probs_npz[0]) == {"probabilities_npz"}
    probs = np.load(io.BytesIO(base64.b64decode(probs_npz[0]["probabilities_npz"])))["probabilities"]
    assert probs.dtype == np.uint8 and probs.shape == (21, 45, 61)
    assert np.abs(probs / 255 - direct).max() <= 0.5 / 255 + 1e-4
    big = np.load(io.BytesIO(base64.b64decode(large["predictions"][0]["probabilities_npz"])))
    assert big["probabilities"].shape == (21, 3000, 3000)
    assert peak - before < 1.0 * 2**30, f"peak RSS {before / 2**30:.2f} -> {peak / 2**30:.2f} GiB"
    # The served confidence PNG is the one predict writes for the registered model.
    assert predict_main(["--model", "models:/seg@champion", "--input", str(tmp_path / "a.png"),
                         "--output", str(tmp_path / "conf"), "--confidence", "margin"]) == 0
    served, kind = read_confidence_png(io.BytesIO(base64.b64decode(
        as_conf["predictions"][0]["confidence_png"])))
    written, _ = read_confidence_png(tmp_path / "conf/a.png.confidence-margin.png")
    assert kind == "margin" and np.array_equal(served, written)
    with Image.open(io.BytesIO(base64.b64decode(as_conf["predictions"][0]["mask_png"]))) as mask:
        assert np.array_equal(np.array(mask), expected)
    top2 = np.sort(direct, axis=0)[-2:]
    assert np.abs(served - (top2[1] - top2[0])).max() <= 1 / 255 + 1e-4


def _post_error(url: str, body: bytes) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_served_limits_refuse_bombs_and_oversize_images_in_one_line_and_tile_the_rest(
        tracking, model_file, tmp_path):
    """register.serve: max_pixels refuses from the header (a 97 KB 10000 x 10000 PNG, a
    1000 x 1000 JPEG) with a 400 whose message is one line (no input echo, stack trace or
    path); whole_pixels sends larger images through sliding windows, as predict --tile."""
    import base64
    import io
    import time

    from deeplab.core.config import parse_params
    from deeplab.serving.registry import register

    params = parse_params({"seed": 0, "mlflow": {"experiment": "test"}, "register": {
        "model_name": "limits", "min_miou": 0.0, "inference": {
            "output_stride": 16, "scales": [1.0], "flip": False},
        "serve": {"max_pixels": 500_000, "whole_pixels": 2_000, "tile": 33, "overlap": 0.25,
                  "max_output_pixels": 5_000, "max_request_pixels": 20_000}}},
        sections=("register", "mlflow"))
    register(model_file, metrics_file(tracking, 0.5), params)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tracking / 'mlflow.db'}"}
    server = servers.start(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
         "models:/limits@champion", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def table(img: Image.Image, fmt: str) -> bytes:
        data = io.BytesIO()
        img.save(data, format=fmt)
        encoded = base64.b64encode(data.getvalue()).decode()
        return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[encoded]]}}).encode()

    bomb = table(Image.new("L", (10000, 10000)), "PNG")
    big = table(Image.fromarray(np.random.default_rng(1).integers(0, 256, (1000, 1000, 3),
                                                                  dtype=np.uint8)), "JPEG")
    image = np.random.default_rng(2).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server)
        url = f"http://127.0.0.1:{port}/invocations"
        start = time.time()
        status, bomb_answer = _post_error(url, bomb)
        bomb_seconds = time.time() - start
        big_status, big_answer = _post_error(url, big)
        ok, tiled = _post_error(url, json.dumps({"inputs": image[None].tolist()}).encode())
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        row = [base64.b64encode(png.getvalue()).decode()]
        refused = {  # what each of these requests says back
            "output": _post_error(url, json.dumps({"dataframe_split": {"columns": ["image"], "data": [
                row]}, "params": {"output": "probabilities"}}).encode()),
            "request": _post_error(url, json.dumps({"dataframe_split": {"columns": ["image"], "data": [
                row] * 4}}).encode()),
            "typed": _post_error(url, json.dumps({"dataframe_split": {"columns": ["image"], "data": [
                row]}, "params": {"output": 5}}).encode())}
    finally:
        servers.stop(server)
    assert len(bomb) < 200_000 and status == 400 and bomb_seconds < 30
    assert bomb_answer["message"] == ("image 0: 10000x10000 is more than the 500,000 pixels "
                                      "allowed (max_pixels)")
    assert big_status == 400 and big_answer["message"].startswith("image 0: 1000x1000 is more than")
    assert refused["output"][1]["message"] == ("image 0: 70x90 is more than the 5,000 pixels "
                                               "allowed (max_output_pixels)")
    assert refused["request"][1]["message"] == ("the request's 4 images (25,200 pixels) is more "
                                                "than the 20,000 pixels allowed (max_request_pixels)")
    assert refused["typed"][1]["message"].startswith("params: ") and "`5`" in refused["typed"][1]["message"]
    for answer in (bomb_answer, big_answer, *(a for _, a in refused.values())):
        assert "stack_trace" not in answer and "\n" not in answer["message"]
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE" and "/" not in answer["message"]
        assert row[0][:40] not in answer["message"]  # the request is not echoed
    Image.fromarray(image).save(tmp_path / "a.png")
    assert predict_main(["--model", "models:/limits@champion", "--input", str(tmp_path / "a.png"),
                         "--output", str(tmp_path / "out"), "--tile", "33", "--overlap", "0.25"]) == 0
    assert ok == 200
    assert np.array_equal(np.array(tiled["predictions"], np.uint8)[0],
                          read_label_png(tmp_path / "out/a.png.labels.png"))
