"""Confidence maps out of predict: each kind against a direct computation from the softmax,
calibrated by a temperature, in windows for large images; the PNG names its kind."""

import math

import numpy as np
import pytest
import torch
from helpers.models import reference_probs, tiny_net
from PIL import Image

from deeplab.serving.predict import main as predict_main
from deeplab.uncertainty.confidence import (
    KINDS,
    ConfidenceCollector,
    calibrate,
    confidence_map,
    read_confidence_png,
)


def direct(probs: torch.Tensor, kind: str) -> np.ndarray:
    """The three kinds written out with torch, independently of `confidence_map`."""
    top = probs.topk(2, dim=0).values
    if kind == "maxprob":
        return top[0].numpy()
    if kind == "margin":
        return (top[0] - top[1]).numpy()
    entropy = torch.special.entr(probs).sum(0)
    return (1 - entropy / math.log(probs.shape[0])).numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_predict_writes_a_confidence_png_of_each_kind(tmp_path, model_file, kind):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = np.random.default_rng(3).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    Image.fromarray(image).save(inputs / "a.png")
    out = tmp_path / "out"
    assert predict_main(["--model", str(model_file), "--input", str(inputs), "--output", str(out),
                         "--confidence", kind]) == 0
    conf, named = read_confidence_png(out / f"a.png.confidence-{kind}.png")
    assert named == kind and conf.shape == (45, 70)
    expected = direct(reference_probs(tiny_net(), image), kind)
    assert np.abs(conf - expected).max() <= 1 / 255 + 1e-4  # 8-bit rounding only
    # A second run over the output folder takes no result of ours as an input.
    assert predict_main(["--model", str(model_file), "--input", str(out), "--output",
                         str(tmp_path / "o2")]) == 2  # nothing left to segment


def test_default_kind_is_maxprob_and_plain_predict_writes_none(tmp_path, model_file):
    image = tmp_path / "b.jpg"
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(image)
    assert predict_main(["--model", str(model_file), "--input", str(image), "--output",
                         str(tmp_path / "o"), "--confidence"]) == 0
    assert [p.name for p in sorted((tmp_path / "o").iterdir())] == [
        "b.jpg.confidence-maxprob.png", "b.jpg.labels.png", "b.jpg.overlay.jpg"]
    assert predict_main(["--model", str(model_file), "--input", str(image), "--output",
                         str(tmp_path / "p")]) == 0
    assert not list((tmp_path / "p").glob("*confidence*"))


def test_temperature_is_softmax_of_logits_over_t_and_keeps_the_argmax():
    logits = torch.randn(5, 7, 9, generator=torch.Generator().manual_seed(0)) * 3
    probs = logits.softmax(0).numpy()
    for t in (0.5, 1.0, 2.5):
        scaled = calibrate(probs, t)
        assert np.allclose(scaled, (logits / t).softmax(0).numpy(), atol=1e-6)
        assert np.array_equal(scaled.argmax(0), probs.argmax(0))
    hot = confidence_map(calibrate(probs, 3.0), "maxprob")
    assert (hot <= confidence_map(probs, "maxprob") + 1e-6).all()  # T > 1 softens


def test_windowed_confidence_fills_every_row_once():
    probs = torch.rand(4, 30, 12).softmax(0).numpy()
    collect = ConfidenceCollector(30, 12, "entropy")
    for y in range(0, 30, 7):  # bands of rows as windows.predict_tiled hands them over
        collect(y, probs[:, y:y + 7])
    assert np.allclose(collect.map, direct(torch.from_numpy(probs), "entropy"), atol=1e-5)
