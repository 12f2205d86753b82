"""Temperature scaling and calibration error against direct computations: torch's
cross-entropy over a grid of temperatures, an ECE written as a loop, and on a tiny model's
validation pixels the NLL goes down."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.models import tiny_net
from PIL import Image

from deeplab.data.dataset import read_list
from deeplab.model.inference import ModelRunner
from deeplab.uncertainty.calibration import (
    PixelSample,
    calibration_of,
    ece,
    fit_temperature,
    nll,
    sample_split,
)


def overconfident(n=4000, c=6, sharpness=4.0, seed=0):
    """Logits whose softmax is too sure of itself: labels drawn from softmax(z), logits 4 z."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g) * 1.5
    labels = torch.multinomial(z.softmax(1), 1, generator=g)[:, 0]
    return (sharpness * z).log_softmax(1).numpy(), labels.numpy()


def test_nll_is_cross_entropy_and_the_fit_is_the_grid_minimum():
    logp, labels = overconfident()
    for t in (0.3, 1.0, 4.0):
        expected = F.cross_entropy(torch.from_numpy(logp).double() / t, torch.from_numpy(labels))
        assert abs(nll(logp, labels, t) - expected.item()) < 1e-9
    t = fit_temperature(logp, labels)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 2001))
    losses = [F.cross_entropy(torch.from_numpy(logp).double() / g, torch.from_numpy(labels)).item()
              for g in grid]
    best = grid[int(np.argmin(losses))]
    assert abs(np.log(t) - np.log(best)) < 0.01, (t, best)
    assert abs(t - 4.0) < 0.4  # it undoes the sharpening the labels were drawn without
    assert nll(logp, labels, t) < nll(logp, labels) - 0.05


def test_ece_against_a_loop_and_calibration_lowers_it():
    logp, labels = overconfident(seed=1)
    probs = np.exp(logp)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    bins, total = 15, 0.0
    for b in range(bins):  # the textbook definition, one bin at a time
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    assert abs(ece(conf, correct, bins) - total) < 1e-6  # float32 confidences
    result = calibration_of(logp, labels, [f"c{k}" for k in range(6)])
    assert result.after.ece < result.before.ece / 2
    assert result.nll_after < result.nll_before
    assert sum(row["pixels"] for row in result.per_class) == result.heldout
    assert result.pixels + result.heldout == len(labels)
    assert result.metrics()["temperature"] == round(result.temperature, 4)


def test_the_temperature_is_fitted_on_one_half_and_judged_on_the_other():
    logp, labels = overconfident(seed=2)
    result = calibration_of(logp, labels, [f"c{k}" for k in range(6)], seed=3)
    order = np.random.default_rng(3).permutation(len(labels))
    fit, held = order[:len(order) // 2], order[len(order) // 2:]
    assert result.temperature == fit_temperature(logp[fit], labels[fit])
    assert result.temperature != fit_temperature(logp[held], labels[held])
    assert abs(result.nll_after - nll(logp[held], labels[held], result.temperature)) < 1e-9
    probs = np.exp(logp[held].astype(np.float64))
    assert abs(result.before.ece - ece(probs.max(1), probs.argmax(1) == labels[held])) < 1e-12


def test_a_split_without_labelled_pixels_gives_no_nan_but_null_with_the_reason(tmp_path):
    import json

    from deeplab.core.io import write_json

    result = calibration_of(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), ["a", "b", "c"])
    metrics = result.metrics()
    assert metrics["temperature"] == 1.0 and metrics["ece"] is None and metrics["nll"] is None
    assert "no labelled validation pixel" in metrics["calibration_note"]
    write_json(tmp_path / "calibration.json", metrics)
    assert json.loads((tmp_path / "calibration.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"{c} in the JSON")) == metrics


def test_temperature_on_a_tiny_models_validation_pixels(tiny_val_csv):
    rows = read_list(tiny_val_csv)
    runner = ModelRunner(tiny_net())
    logp, labels = sample_split(runner, rows, 21, pixels=10**9)  # every labelled pixel
    masks = [np.asarray(Image.open(m)) for m in rows["mask"]]
    assert len(labels) == sum(int((m != 255).sum()) for m in masks)
    assert np.allclose(np.exp(logp).sum(1), 1, atol=1e-4)
    t = fit_temperature(logp, labels)
    assert nll(logp, labels, t) < nll(logp, labels)  # the direct check: lower on the same pixels
    half, _ = sample_split(runner, rows, 21, pixels=len(labels) // 2, seed=1)
    assert 0.35 * len(labels) < len(half) < 0.65 * len(labels)  # a uniform sample of about that


def test_pixel_sample_skips_ignored_pixels():
    sample = PixelSample(rate=1.0)
    label = np.array([[0, 255], [1, 30]])  # 30: no such class for a 3-class model
    sample.visitor(label)(0, np.full((3, 2, 2), 1 / 3, np.float32))
    logp, labels = sample.arrays(3)
    assert labels.tolist() == [0, 1] and logp.shape == (2, 3)
