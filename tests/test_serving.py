"""The deployable model: Segmenter, predict command, torch.export program, MLflow registry + pyfunc."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab.model_files import save_model
from deeplab.config import parse_params
from deeplab.data.palette import read_label_png
from deeplab.errors import DeeplabError
from deeplab.serving.export import export_program
from deeplab.model import DeepLabV3Plus
from deeplab.serving.predict import main as predict_main
from deeplab.evaluation.inference import InferenceStrategy
from deeplab.serving.segmenter import Segmenter, load_segmenter

PARAMS = parse_params({"seed": 0, "mlflow": {"experiment": "test"},
                       "register": {"model_name": "seg", "min_miou": 0.0,
                                    "inference": {"output_stride": 16, "scales": [1.0],
                                                  "flip": False}}},
                      sections=("register", "mlflow"))


def tiny_net(seed: int = 0) -> DeepLabV3Plus:
    torch.manual_seed(seed)
    return DeepLabV3Plus(21, "mobilenetv2", 16, aspp_channels=16, decoder_channels=16).eval()


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "finetune.pt"
    save_model(path, tiny_net(), stage="finetune", val_miou=0.5)
    return path


def reference_labels(net: DeepLabV3Plus, image: np.ndarray) -> np.ndarray:
    """The reference geometry, written independently: a mean-pixel canvas of the smallest
    k*OS+1 size holding the image, the image in its top-left corner, logits cropped back."""
    h, w = image.shape[:2]
    os_ = net.output_stride
    ph, pw = -(-(h - 1) // os_) * os_ + 1, -(-(w - 1) // os_) * os_ + 1
    canvas = net.mean.reshape(1, 3, 1, 1).repeat(1, 1, ph, pw)
    canvas[..., :h, :w] = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return net(canvas)[..., :h, :w].argmax(1)[0].numpy().astype(np.uint8)


def test_segmenter_takes_uint8_hwc_of_any_size():
    net = tiny_net()
    seg = Segmenter(net)
    rng = np.random.default_rng(0)
    for h, w in [(65, 65), (51, 77)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = seg(torch.from_numpy(image))
        assert out.shape == (h, w) and out.dtype == torch.uint8
        assert np.array_equal(out.numpy(), reference_labels(net, image))
    batch = seg(torch.from_numpy(rng.integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)))
    assert batch.shape == (2, 40, 50)
    with pytest.raises(ValueError, match="uint8"):
        seg(torch.zeros(1, 40, 40, 3))
    with pytest.raises(ValueError, match="N x H x W x 3"):
        seg(torch.zeros(1, 3, 40, 40, dtype=torch.uint8))


def test_exported_program_matches_pytorch(tmp_path):
    seg = Segmenter(tiny_net(), InferenceStrategy(output_stride=8, flip=True))
    export_program(seg, tmp_path / "m.pt2", example_size=65, max_size=512)
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    rng = np.random.default_rng(1)
    for shape in [(1, 65, 65, 3), (2, 57, 91, 3)]:
        x = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
        with torch.no_grad():
            assert torch.equal(program(x), seg(x))
    with pytest.raises(ValueError, match="single-scale"):
        export_program(Segmenter(tiny_net(), InferenceStrategy(scales=(0.5, 1.0))), tmp_path / "ms.pt2")
    assert not (tmp_path / "ms.pt2").exists()


def test_predict_command_on_mixed_folder(tmp_path, model_file, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(inputs / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (41, 33, 3), dtype=np.uint8)).save(inputs / "b.png")
    Image.fromarray(rng.integers(0, 256, (50, 60), dtype=np.uint8)).save(inputs / "gray.png")
    (inputs / "notes.txt").write_text("not an image, ignored")
    assert predict_main(["--model", str(model_file), "--input", str(inputs),
                         "--output", str(tmp_path / "out"), "--device", "cpu"]) == 0
    for name, size in [("a.jpg", (70, 90)), ("b.png", (41, 33)), ("gray.png", (50, 60))]:
        label = read_label_png(tmp_path / "out" / f"{name}.labels.png")
        assert label.shape == size
        assert Image.open(tmp_path / "out" / f"{name}.overlay.jpg").size == size[::-1]
    net = tiny_net()
    image = np.array(Image.open(inputs / "a.jpg").convert("RGB"))
    assert np.array_equal(read_label_png(tmp_path / "out" / "a.jpg.labels.png"),
                          reference_labels(net, image))

    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code = predict_main(["--model", str(model_file), "--input", str(inputs),
                         "--output", str(tmp_path / "out2"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "broken.jpg: not a readable image" in err
    assert (tmp_path / "out2" / "a.jpg.labels.png").is_file()  # the readable ones are still done
    assert predict_main(["--model", str(tmp_path / "nope.pt"), "--input", str(inputs),
                         "--output", str(tmp_path / "o3")]) == 2
    assert "nope.pt: model file not found" in capsys.readouterr().err


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield tmp_path
    import mlflow
    mlflow.set_tracking_uri(None)


def _metrics(tmp_path: Path, miou: float) -> Path:
    path = tmp_path / f"metrics_{miou}.json"
    path.write_text(json.dumps({"miou": miou}))
    return path


def test_model_digest_covers_weights_config_and_strategy_not_metadata(tmp_path):
    from deeplab.serving.registry import model_digest

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


def test_registry_aliases_noop_and_pyfunc_in_fresh_process(tracking, model_file):
    from deeplab.serving.registry import register

    first = register(model_file, _metrics(tracking, 0.5), PARAMS)
    assert first == {"name": "seg", "version": 1, "new": True, "aliases": ["champion"], "miou": 0.5}
    again = register(model_file, _metrics(tracking, 0.5), PARAMS)
    assert again["new"] is False and again["version"] == 1 and again["aliases"] == ["champion"]
    retrained = tracking / "retrained.pt"  # the same weights from another run: same version
    save_model(retrained, tiny_net(), stage="finetune", run_id="another-run", git_commit="abc")
    assert retrained.read_bytes() != model_file.read_bytes()
    assert register(retrained, _metrics(tracking, 0.5), PARAMS)["version"] == 1

    worse = tracking / "worse.pt"
    save_model(worse, tiny_net(1), stage="finetune")
    assert register(worse, _metrics(tracking, 0.4), PARAMS)["aliases"] == ["challenger"]
    better = tracking / "better.pt"
    save_model(better, tiny_net(2), stage="finetune")
    assert register(better, _metrics(tracking, 0.6), PARAMS) == {
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


def test_one_loader_for_files_registry_uris_and_programs(tmp_path, model_file, tracking):
    """load_segmenter gives the same labels from the model file, its registered version (with
    the strategy it was registered with) and its exported program."""
    from deeplab.serving.registry import register

    x = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (1, 50, 70, 3), dtype=np.uint8))
    strategy = InferenceStrategy(output_stride=8, flip=True)
    params = PARAMS.replace(register=PARAMS.register.replace(
        inference=PARAMS.register.inference.replace(output_stride=8, flip=True)))
    register(model_file, _metrics(tracking, 0.5), params)
    from_file = load_segmenter(model_file, strategy)
    from_registry = load_segmenter("models:/seg@champion")
    assert from_registry.strategy == from_file.strategy == strategy
    export_program(from_file, tmp_path / "m.pt2", example_size=65, max_size=256)
    program = load_segmenter(tmp_path / "m.pt2")
    with torch.no_grad():
        assert torch.equal(from_file(x), from_registry(x)) and torch.equal(from_file(x), program(x))
    assert load_segmenter("models:/seg@champion", flip=False).strategy.flip is False  # an override
    with pytest.raises(DeeplabError, match="fixed inference strategy"):
        load_segmenter(tmp_path / "m.pt2", scales=(0.5, 1.0))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc, timeout: float = 180) -> None:
    import time
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


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

    register(model_file, _metrics(tracking, 0.5), PARAMS)
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tracking / 'mlflow.db'}"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/seg@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/ping", server)
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
