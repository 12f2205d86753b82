"""Training engine: resume equivalence, poly LR, NaN guard."""

import pytest
import torch

from deeplab.data.dataset import SegmentationDataset, read_list
from deeplab.model import DeepLabV3Plus
from deeplab.engine.loop import train
from deeplab.config import RuntimeConfig, Schedule, TrainConfig
from deeplab.engine.optim import sgd_with_poly_schedule
from deeplab.errors import TrainingDivergedError

SCHED = Schedule(iterations=6, batch_size=2, crop_size=33, lr=0.01, lr_power=0.9, momentum=0.9,
                 weight_decay=4e-5, scale_range=[0.5, 2.0], flip=True, checkpoint_every=2,
                 val_every=0, freeze_bn=False)
SETTINGS = TrainConfig(launcher="python", device="cpu", amp="off", channels_last=False, compile=False)
RUNTIME = RuntimeConfig(workers=0, threads=2, log_every=1)


@pytest.fixture(scope="module")
def dataset(tiny_train_csv):
    return SegmentationDataset(read_list(tiny_train_csv), SCHED.crop_size, SCHED.scale_range, True)


def model():
    torch.manual_seed(0)
    return DeepLabV3Plus(21, "mobilenetv2", 16, aspp_channels=16, decoder_channels=16)


@pytest.mark.parametrize("iterations, lr", [(100, 0.01), (500, 0.06), (30000, 0.007)])
def test_poly_schedule_matches_the_closed_form(iterations, lr):
    """torch's PolynomialLR (updated by ratios) against lr * (1 - it / total) ** power:
    equal to 1e-12 relative, and bit-identical in float32, the precision SGD applies it in."""
    import numpy as np

    net = torch.nn.Conv2d(3, 4, 3)
    optimizer, scheduler = sgd_with_poly_schedule(net, SCHED.replace(iterations=iterations, lr=lr))
    rates = []
    for _ in range(iterations):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    closed = lr * (1 - np.arange(iterations) / iterations) ** 0.9
    np.testing.assert_allclose(rates, closed, rtol=1e-12)
    assert np.array_equal(np.float32(rates), np.float32(closed))
    assert optimizer.param_groups[0]["lr"] == 0.0
    assert [g["weight_decay"] for g in optimizer.param_groups] == [SCHED.weight_decay, 0.0]


def test_interrupted_run_resumes_to_identical_weights(dataset, tmp_path):
    straight = model()
    r = train(straight, dataset, SCHED, SETTINGS, RUNTIME, tmp_path / "a.ckpt", seed=5, fingerprint_settings={"x": 1})
    assert r.iterations == 6 and r.resumed_from == 0

    interrupted = model()
    part = train(interrupted, dataset, SCHED, SETTINGS, RUNTIME, tmp_path / "b.ckpt", seed=5,
                 fingerprint_settings={"x": 1}, stop_after=3)
    assert part.iterations == 3
    resumed = model()  # a fresh process: new model, state comes from the checkpoint
    r2 = train(resumed, dataset, SCHED, SETTINGS, RUNTIME, tmp_path / "b.ckpt", seed=5, fingerprint_settings={"x": 1})
    assert r2.resumed_from == 3 and r2.iterations == 6
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["iteration"] for h in r2.history] == [1, 2, 3, 4, 5, 6]


def test_checkpoint_of_other_settings_is_not_resumed(dataset, tmp_path):
    train(model(), dataset, SCHED, SETTINGS, RUNTIME, tmp_path / "c.ckpt", seed=5, fingerprint_settings={"x": 1},
          stop_after=2)
    r = train(model(), dataset, SCHED.replace(iterations=2), SETTINGS, RUNTIME, tmp_path / "c.ckpt", seed=5,
              fingerprint_settings={"x": 2})
    assert r.resumed_from == 0


def test_nan_loss_stops_with_clear_message(dataset, tmp_path):
    bad = model()
    with torch.no_grad():
        bad.head.classifier.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="loss is nan at iteration 1"):
        train(bad, dataset, SCHED, SETTINGS, RUNTIME, tmp_path / "d.ckpt", seed=5, fingerprint_settings={})


def test_data_signature_changes_when_a_file_is_rewritten(tmp_path):
    import os

    from deeplab.tracking import files_signature

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    before = files_signature([str(a), str(b)])
    assert files_signature([str(a), str(b)]) == before
    b.write_bytes(b"3")
    os.utime(b, ns=(1, 1))
    assert files_signature([str(a), str(b)]) != before
