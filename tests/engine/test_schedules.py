"""What the best trainers offer, each against torch's own implementation on the same settings:
warmup (SequentialLR), a weight average (AveragedModel), gradient accumulation (one batch of
them all), gradient clipping (clip_grad_norm_); and a default schedule that none of them moves."""

import numpy as np
import pytest
import torch
from helpers.training import RUNTIME, SCHED, SETTINGS
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from deeplab.core.errors import ConfigError
from deeplab.core.schema import Ema, Schedule, Warmup
from deeplab.data.dataset import SegmentationDataset, read_list
from deeplab.engine.ema import WeightAverage
from deeplab.engine.loop import TrainOptions, global_batch_loss, optimizer_step, train
from deeplab.engine.losses import Objective
from deeplab.engine.optim import sgd_with_poly_schedule
from deeplab.model import DeepLabV3Plus


def net(dtype=torch.float32):
    torch.manual_seed(0)
    return DeepLabV3Plus(21, "mobilenetv2", 16, aspp_channels=16, decoder_channels=16).to(dtype)


@pytest.mark.parametrize("iterations, warm, start", [(100, 10, 0.001), (30000, 1500, 0.1), (7, 1, 0.5)])
def test_warmup_then_poly_equals_torchs_sequential_lr(iterations, warm, start):
    sched = SCHED.replace(iterations=iterations, lr=0.01,
                          warmup=Warmup(iterations=warm, start_factor=start))
    layer = torch.nn.Conv2d(3, 4, 3)
    optimizer, scheduler = sgd_with_poly_schedule(layer, sched)
    peer_opt = torch.optim.SGD(torch.nn.Conv2d(3, 4, 3).parameters(), lr=0.01)
    peer = torch.optim.lr_scheduler.SequentialLR(peer_opt, [
        torch.optim.lr_scheduler.LinearLR(peer_opt, start_factor=start, total_iters=warm),
        torch.optim.lr_scheduler.PolynomialLR(peer_opt, total_iters=iterations - warm, power=0.9)],
        milestones=[warm])
    ours, theirs = [], []
    for _ in range(iterations):
        ours.append(optimizer.param_groups[0]["lr"])
        theirs.append(peer_opt.param_groups[0]["lr"])
        optimizer.step(), scheduler.step(), peer_opt.step(), peer.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-15)
    assert ours[0] == pytest.approx(0.01 * start) and max(ours) == pytest.approx(0.01)


def test_weight_average_equals_torchs_averaged_model_with_buffers():
    """The same SGD steps (BN in training mode, so its statistics move), an update every 2nd
    step: every parameter and buffer equal to AveragedModel's, the batch counter included."""
    model = net()
    peer = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ours = WeightAverage(0.9, every=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(1)
    for step in range(1, 8):
        x, y = torch.rand(2, 3, 33, 33), torch.randint(0, 21, (2, 33, 33))
        optimizer.zero_grad()
        global_batch_loss(model, x, y, None)[0].backward()
        optimizer.step()
        ours.update(model, step)
        if step % 2 == 0:
            peer.update_parameters(model)
    expected = peer.module.state_dict()
    got = ours.weights()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert not torch.equal(got["head.classifier.weight"], model.state_dict()["head.classifier.weight"])


@pytest.fixture(scope="module")
def fixed_batches(tiny_train_csv):
    """The six 40x40 images at crop 41, scale 1, no flip: no random change, so micro-batches
    and one big batch see the same pixels (the padded border is ignored: 255)."""
    return SegmentationDataset(read_list(tiny_train_csv), 41, [1.0, 1.0], False)


@pytest.mark.parametrize("loss", ["ce", "ce+dice"])
def test_accumulated_micro_batches_equal_one_batch_of_them_all(fixed_batches, tmp_path, loss):
    """float64, frozen BN, momentum 0: 2 micro-batches of 2 give the weights of one batch of 4
    within 1e-10 for `ce` (each micro-batch weighs its share of the labelled pixels); Dice,
    which does not split into pixel sums, is the mean of the micro-batch losses, as in
    mmengine and smp, and not equal."""
    sched = SCHED.replace(iterations=1, lr=0.5, momentum=0.0, weight_decay=0.0, freeze_bn=True,
                          crop_size=41, scale_range=[1.0, 1.0], flip=False, loss=loss,
                          checkpoint_every=1)
    one, two = net(torch.float64), net(torch.float64)
    train(one, fixed_batches, sched.replace(batch_size=4), SETTINGS, RUNTIME,
          TrainOptions(tmp_path / "one.ckpt", seed=3))
    result = train(two, fixed_batches, sched.replace(batch_size=2, accumulate=2), SETTINGS,
                   RUNTIME, TrainOptions(tmp_path / "two.ckpt", seed=3))
    assert result.iterations == 1  # one optimizer step
    start = net(torch.float64).state_dict()
    moved = [k for k, v in start.items() if v.is_floating_point() and not torch.equal(v, one.state_dict()[k])]
    assert len(moved) > 20
    gaps = [float((one.state_dict()[k] - two.state_dict()[k]).abs().max()) for k in moved]
    if loss == "ce":
        assert max(gaps) < 1e-10
    else:
        assert max(gaps) > 1e-6


def test_accumulation_counts_optimizer_steps_and_resumes(fixed_batches, tmp_path):
    sched = SCHED.replace(iterations=4, accumulate=2, checkpoint_every=2)
    straight = net()
    result = train(straight, fixed_batches, sched, SETTINGS, RUNTIME, TrainOptions(tmp_path / "a", seed=1))
    assert result.iterations == 4 and [h["iteration"] for h in result.history] == [1, 2, 3, 4]
    assert result.images_per_s > 0 and result.history[-1]["lr"] == 0.0  # the schedule's end

    class Stop(Exception):
        pass

    def stop_at_3(it, _record):
        if it == 3:
            raise Stop

    with pytest.raises(Stop):
        train(net(), fixed_batches, sched, SETTINGS, RUNTIME,
              TrainOptions(tmp_path / "b", seed=1, on_log=stop_at_3))
    resumed = net()
    again = train(resumed, fixed_batches, sched, SETTINGS, RUNTIME, TrainOptions(tmp_path / "b", seed=1))
    assert again.resumed_from == 2
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key


def test_clipping_equals_torchs_clip_grad_norm_and_logs_the_norm_before(tmp_path, fixed_batches):
    model, peer = net(), net()
    x, y = torch.rand(2, 3, 33, 33), torch.randint(0, 21, (2, 33, 33))
    sched = SCHED.replace(lr=0.1)
    optimizer, scheduler = sgd_with_poly_schedule(model, sched)
    peer_opt, _ = sgd_with_poly_schedule(peer, sched)
    for m in (model, peer):
        torch.manual_seed(3)  # the same dropout
        global_batch_loss(m, x, y, None)[0].backward()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    norm = optimizer_step(optimizer, scaler, scheduler, clip_grad_norm=0.05)
    expected = torch.nn.utils.clip_grad_norm_(peer.parameters(), 0.05)
    peer_opt.step()
    assert norm == pytest.approx(float(expected), rel=1e-6) and norm > 0.05  # it did clip
    for (key, a), b in zip(model.state_dict().items(), peer.state_dict().values()):
        assert torch.equal(a, b), key

    result = train(net(), fixed_batches, SCHED.replace(iterations=2, clip_grad_norm=1.0), SETTINGS,
                   RUNTIME, TrainOptions(tmp_path / "c", seed=1))
    assert all(h["grad_norm"] > 0 for h in result.history)
    plain = train(net(), fixed_batches, SCHED.replace(iterations=2), SETTINGS, RUNTIME,
                  TrainOptions(tmp_path / "d", seed=1))
    assert "grad_norm" not in plain.history[0]


def test_ema_is_checkpointed_and_resumes_bit_exactly(fixed_batches, tmp_path):
    sched = SCHED.replace(iterations=4, ema=Ema(decay=0.8, every=1), keep="ema", checkpoint_every=2)
    straight = train(net(), fixed_batches, sched, SETTINGS, RUNTIME, TrainOptions(tmp_path / "a", seed=1))

    class Stop(Exception):
        pass

    def stop_at_3(it, _record):
        if it == 3:
            raise Stop

    with pytest.raises(Stop):
        train(net(), fixed_batches, sched, SETTINGS, RUNTIME,
              TrainOptions(tmp_path / "b", seed=1, on_log=stop_at_3))
    resumed = train(net(), fixed_batches, sched, SETTINGS, RUNTIME, TrainOptions(tmp_path / "b", seed=1))
    assert resumed.resumed_from == 2
    a, b = straight.ema.weights(), resumed.ema.weights()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_and_kept_weights_are_the_averages(fixed_batches, tmp_path):
    """With `ema`, every validation sees the averaged weights, and keep: ema writes them."""
    seen = []

    def validate(model, it):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"val_miou": 0.5}

    sched = SCHED.replace(iterations=4, val_every=2, ema=Ema(decay=0.5), keep="ema")
    model = net()
    result = train(model, fixed_batches, sched, SETTINGS, RUNTIME,
                   TrainOptions(tmp_path / "v", seed=1, on_validate=validate))
    assert len(seen) == 1  # at iteration 2 (the last one is the stage's own validation)
    assert not torch.equal(seen[0]["head.classifier.weight"], model.state_dict()["head.classifier.weight"])
    assert set(result.ema.weights()) == set(model.state_dict())


@pytest.mark.parametrize("change, message", [
    ({"keep": "ema"}, "keep: ema keeps the averaged weights"),
    ({"ema": {"decay": 0.99}}, "ema is set but keep: last"),
    ({"warmup": {"iterations": 6}}, "warmup.iterations must be below iterations"),
    ({"ema": {"decay": 1.0}, "keep": "ema"}, "less than 1"),
    ({"accumulate": 0}, "greater than or equal to 1"),
    ({"clip_grad_norm": -1}, "greater than 0"),
])
def test_bad_settings_are_one_line_naming_the_key(change, message):
    from deeplab.core.validation import validate

    with pytest.raises(ConfigError, match=message):
        validate(Schedule, {**SCHED.model_dump(), **change})


def test_the_default_schedule_trains_as_before(fixed_batches, tmp_path):
    """None of the new keys set: the same loss at every step as the plain poly schedule with
    the SGD step written out (what the loop did before they existed)."""
    model = net()
    result = train(model, fixed_batches, SCHED.replace(iterations=3, flip=False, scale_range=[1.0, 1.0],
                                                       crop_size=41),
                   SETTINGS, RUNTIME, TrainOptions(tmp_path / "p", seed=2))
    reference = net()
    optimizer, scheduler = sgd_with_poly_schedule(reference, SCHED.replace(iterations=3))
    from deeplab.engine.loop import seed_everything, set_train_mode

    seed_everything(2)
    set_train_mode(reference)
    losses = []
    order = np.random.default_rng([2, 0]).permutation(len(fixed_batches))
    for it in range(3):
        idx = order[it * 2:(it + 1) * 2]
        images = torch.stack([torch.as_tensor(fixed_batches[(int(i), 0)][0]) for i in idx]).float().div(255)
        labels = torch.stack([torch.as_tensor(fixed_batches[(int(i), 0)][1]) for i in idx])
        optimizer.zero_grad()
        loss, value = global_batch_loss(reference, images, labels, None, Objective())
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(value))
    assert [h["loss"] for h in result.history] == losses
