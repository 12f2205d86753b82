"""Whole-split evaluation: whole images, or sliding windows as the evaluate stage runs them
(`report.measure.windowed`: `evaluate.tile`, `overlap`, `whole_pixels`), for the network and for
any runner with the runtimes' interface."""

import numpy as np
import torch
from helpers.models import tiny_net

from deeplab.core.schema import WindowSettings
from deeplab.data.dataset import read_list
from deeplab.evaluation.evaluate import evaluate
from deeplab.model.inference import ModelRunner
from deeplab.report.measure import windowed
from deeplab.serving.windows import predict_tiled


class Recorder(ModelRunner):
    """The network's runner, recording the size of every input it is given."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls = []

    def probs(self, images):
        self.calls.append(("probs", images.shape[1:3]))
        return super().probs(images)

    def labels(self, images):
        self.calls.append(("labels", images.shape[1:3]))
        return super().labels(images)


def test_windows_run_when_asked_and_equal_the_whole_image_when_one_covers_it(tiny_val_csv):
    rows = read_list(tiny_val_csv)  # two 40 x 40 images
    net, cpu = tiny_net(), torch.device("cpu")
    whole = evaluate(net, rows, 21, cpu, keep_predictions=2)
    # One window as large as the image: the same predictions as the whole image.
    covering = evaluate(net, rows, 21, cpu, keep_predictions=2,
                        predict=windowed(ModelRunner(net), WindowSettings(tile=49)))
    assert np.array_equal(covering["cm"], whole["cm"])
    # Below whole_pixels the default is the whole image; above it, windows of the default size.
    runner = Recorder(net)
    evaluate(None, rows, 21, cpu, predict=windowed(runner, WindowSettings(whole_pixels=1600)))
    assert runner.calls == [("labels", (40, 40))] * 2
    runner.calls.clear()
    evaluate(None, rows, 21, cpu, predict=windowed(runner, WindowSettings(whole_pixels=1599)))
    assert runner.calls == [("probs", (40, 40))] * 2  # the 769 window holds the image
    # Small windows: four 33 x 33 windows per image, averaged as predict_tiled does.
    runner.calls.clear()
    tiled = evaluate(None, rows, 21, cpu, keep_predictions=2,
                     predict=windowed(runner, WindowSettings(tile=33, overlap=0.5)))
    assert runner.calls == [("probs", (33, 33))] * 8
    for image, _, pred in tiled["samples"]:
        expected = predict_tiled(ModelRunner(net).probs, image, 33, 0.5)
        assert np.array_equal(pred, expected)
