"""The training loop: poly LR, resume to identical weights, NaN guard, BN and weight decay."""


import pytest
import torch
from helpers.models import (
    tiny_net,
)
from helpers.training import RUNTIME, SCHED, SETTINGS
from torch import nn

from deeplab.core.errors import (
    TrainingDivergedError,
)
from deeplab.data.dataset import SegmentationDataset, read_list
from deeplab.engine.checkpoints import load_checkpoint
from deeplab.engine.distributed import synchronize_batchnorm
from deeplab.engine.loop import TrainOptions, set_train_mode, train
from deeplab.engine.optim import param_groups, sgd_with_poly_schedule
from deeplab.model import DeepLabV3Plus


@pytest.fixture(scope="module")
def dataset(tiny_train_csv):
    return SegmentationDataset(read_list(tiny_train_csv), SCHED.crop_size, SCHED.scale_range, True)


def model():
    torch.manual_seed(0)
    return DeepLabV3Plus(21, "mobilenetv2", 16, aspp_channels=16, decoder_channels=16)


def options(path, fingerprint=None, **more):
    return TrainOptions(path, seed=5, fingerprint=fingerprint if fingerprint is not None else {"x": 1},
                        **more)


def interrupt_at(iteration: int):
    def on_log(it, _record):
        if it == iteration:
            raise Interrupted
    return on_log


class Interrupted(Exception):
    """What a Ctrl-C would do mid-run."""



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
    r = train(straight, dataset, SCHED, SETTINGS, RUNTIME, options(tmp_path / "a.ckpt"))
    assert r.iterations == 6 and r.resumed_from == 0

    interrupted = model()
    with pytest.raises(Interrupted):  # at iteration 5; the checkpoint of iteration 4 stays
        train(interrupted, dataset, SCHED, SETTINGS, RUNTIME,
              options(tmp_path / "b.ckpt", on_log=interrupt_at(5)))
    resumed = model()  # a fresh process: new model, state comes from the checkpoint
    r2 = train(resumed, dataset, SCHED, SETTINGS, RUNTIME, options(tmp_path / "b.ckpt"))
    assert r2.resumed_from == 4 and r2.iterations == 6
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["iteration"] for h in r2.history] == [1, 2, 3, 4, 5, 6]


def test_checkpoint_of_other_settings_is_not_resumed(dataset, tmp_path):
    with pytest.raises(Interrupted):
        train(model(), dataset, SCHED, SETTINGS, RUNTIME,
              options(tmp_path / "c.ckpt", on_log=interrupt_at(3)))
    r = train(model(), dataset, SCHED.replace(iterations=2), SETTINGS, RUNTIME,
              options(tmp_path / "c.ckpt", {"x": 2}))
    assert r.resumed_from == 0


def test_nan_loss_stops_with_clear_message(dataset, tmp_path):
    bad = model()
    with torch.no_grad():
        bad.head.classifier.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="loss is nan at iteration 1"):
        train(bad, dataset, SCHED, SETTINGS, RUNTIME, options(tmp_path / "d.ckpt", {}))


def test_bn_momentum_reaches_every_bn_including_synchronized():
    model = DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=16, decoder_channels=16,
                          bn_momentum=0.0003)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) > 50 and all(m.momentum == 0.0003 for m in bns)
    converted = synchronize_batchnorm(model, torch.device("cpu"))  # GlobalBatchNorm (gloo)
    assert all(m.momentum == 0.0003 for m in converted.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm))
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # what CUDA gets
    assert all(m.momentum == 0.0003 for m in sync.modules() if isinstance(m, nn.SyncBatchNorm))


def test_weight_decay_on_conv_and_linear_weights_only():
    model = DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=16, decoder_channels=16)
    decay, no_decay = param_groups(model, 4e-5)
    weights = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {id(p) for p in decay["params"]} == weights and decay["weight_decay"] == 4e-5
    others = {id(p) for p in model.parameters()} - weights  # BN affine and biases
    assert {id(p) for p in no_decay["params"]} == others and no_decay["weight_decay"] == 0.0


def test_freeze_bn_keeps_statistics_and_affine(tiny_train_csv, tmp_path):
    from deeplab.data.dataset import SegmentationDataset, read_list
    from deeplab.engine.loop import TrainOptions, train

    torch.manual_seed(0)
    model = DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=16, decoder_channels=16)
    bn_state = {k: v.clone() for k, v in model.state_dict().items()
                if any(k.startswith(n + ".") for n, m in model.named_modules()
                       if isinstance(m, nn.BatchNorm2d))}
    conv_before = model.aspp.branches[0][0].weight.clone()
    sched = SCHED.replace(iterations=3, lr=0.05, freeze_bn=True)
    train(model, SegmentationDataset(read_list(tiny_train_csv), 33), sched, SETTINGS, RUNTIME,
          TrainOptions(tmp_path / "c.ckpt", 0))
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in bn_state.items() if "num_batches" not in k)
    assert not torch.equal(model.aspp.branches[0][0].weight, conv_before)
    set_train_mode(model, freeze_bn=True)
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_checkpoint_round_trips_through_weights_only_load(tmp_path, tiny_train_csv):
    from deeplab.data.dataset import SegmentationDataset, read_list

    ds = SegmentationDataset(read_list(tiny_train_csv), 33)
    train(tiny_net(), ds, SCHED.replace(iterations=2, checkpoint_every=1), SETTINGS, RUNTIME,
          TrainOptions(tmp_path / "c.ckpt", 0, {"x": 1}, run_id="abc"))
    state = torch.load(tmp_path / "c.ckpt", weights_only=True)  # raises if anything is pickled
    assert state["iteration"] == 2 and state["run_id"] == "abc"


def test_truncated_checkpoint_starts_over_with_a_warning(tmp_path, tiny_train_csv, caplog):
    from deeplab.data.dataset import SegmentationDataset, read_list

    ckpt = tmp_path / "c.ckpt"
    torch.save({"fingerprint": "x", "model": torch.zeros(1000)}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:200])  # cut mid-file
    assert load_checkpoint(ckpt, "x", 10) is None
    assert any(str(ckpt) in r.message and "truncated or corrupt" in r.message for r in caplog.records)
    result = train(tiny_net(), SegmentationDataset(read_list(tiny_train_csv), 33),
                   SCHED.replace(iterations=1, checkpoint_every=1), SETTINGS, RUNTIME,
                   TrainOptions(ckpt, 0))
    assert result.resumed_from == 0 and torch.load(ckpt, weights_only=True)["iteration"] == 1


def test_auto_precision_trains_in_bf16_where_the_cpu_computes_it(tmp_path, dataset, monkeypatch):
    """`train.amp: auto` on a CPU with AVX512_BF16 (or AMX): bf16 autocast and channels_last
    (the loss differs from fp32 by bf16 rounding only); on an AVX2-only CPU, fp32 exactly."""
    from deeplab.model import device as dev

    auto = SETTINGS.replace(amp="auto", channels_last="auto")
    short = SCHED.replace(iterations=2)
    losses = {}
    for name, flags in (("bf16", {"avx512_bf16"}), ("avx2", {"avx2"})):
        monkeypatch.setattr(dev, "cpu_flags", lambda flags=flags: frozenset(flags))
        net = model()
        result = train(net, dataset, short, auto, RUNTIME, options(tmp_path / f"{name}.ckpt"))
        losses[name] = [h["loss"] for h in result.history]
        assert next(net.parameters()).dtype == torch.float32  # weights stay fp32
    fp32 = train(model(), dataset, short, SETTINGS, RUNTIME, options(tmp_path / "fp32.ckpt"))
    assert losses["avx2"] == [h["loss"] for h in fp32.history]
    assert losses["bf16"] != losses["avx2"]
    assert losses["bf16"] == pytest.approx(losses["avx2"], rel=0.05)


class Scripted:
    """A validation that returns scripted mIoUs and records the weights it was shown."""

    def __init__(self, scores):
        self.scores, self.seen = scores, {}

    def __call__(self, net, it):
        self.seen[it] = {k: v.clone() for k, v in net.state_dict().items()}
        return {"val_miou": self.scores[it]}


def test_keep_best_and_early_stop_survive_an_interruption(dataset, tmp_path):
    """keep: best holds the weights of the best validation; early_stop ends the run after
    `patience` validations without a gain; an interruption between the two resumes to the
    same best weights, the same stop and the same final weights."""
    from deeplab.core.schema import EarlyStop

    sched = SCHED.replace(iterations=12, val_every=2, checkpoint_every=2, keep="best",
                          early_stop=EarlyStop(patience=2, min_delta=0.01))
    scores = {2: 0.50, 4: 0.70, 6: 0.705, 8: 0.69, 10: 0.9}  # 6: a gain below min_delta
    straight_val = Scripted(scores)
    straight = model()
    r = train(straight, dataset, sched, SETTINGS, RUNTIME,
              options(tmp_path / "a.ckpt", on_validate=straight_val))
    assert r.iterations == 8 and r.selection.stopped  # 6 and 8 brought no gain above 0.01
    assert r.selection.best_iteration == 4 and r.selection.best_miou == 0.70
    assert all(torch.equal(r.selection.best_state[k], v) for k, v in straight_val.seen[4].items())

    with pytest.raises(Interrupted):  # killed at iteration 7: the checkpoint of 6 holds the best
        train(model(), dataset, sched, SETTINGS, RUNTIME,
              options(tmp_path / "b.ckpt", on_log=interrupt_at(7), on_validate=Scripted(scores)))
    resumed = model()
    r2 = train(resumed, dataset, sched, SETTINGS, RUNTIME,
               options(tmp_path / "b.ckpt", on_validate=Scripted(scores)))
    assert r2.resumed_from == 6 and r2.iterations == 8 and r2.selection.best_iteration == 4
    assert all(torch.equal(r2.selection.best_state[k], v) for k, v in r.selection.best_state.items())
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                                 resumed.state_dict().values()))
    again = train(model(), dataset, sched, SETTINGS, RUNTIME,  # a rerun after the stop: no training
                  options(tmp_path / "b.ckpt", on_validate=Scripted(scores)))
    assert again.iterations == 8 and again.resumed_from == 8


def test_keep_best_and_early_stop_need_validations():
    from deeplab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="set val_every > 0"):
        SCHED.replace(val_every=0, keep="best")
