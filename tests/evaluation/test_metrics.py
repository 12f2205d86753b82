"""Metrics against an independent computation (scikit-learn), boundary bands, bootstrap intervals."""

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion

from deeplab.evaluation.metrics import (
    boundary_band,
    bootstrap_miou,
    confusion_matrix,
    image_counts,
    mdice_of_counts,
    miou_of_counts,
    scores,
)
from deeplab.model.inference import InferenceStrategy, predict_probs


def test_confusion_and_miou_match_sklearn():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, size=(4, 30, 30))
    target[rng.random(target.shape) < 0.1] = 255
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, 6, target.shape)) % 6
    cm = torch.zeros(6, 6, dtype=torch.long)
    for t, p in zip(target, pred):  # accumulated over the split, not averaged per image
        cm += confusion_matrix(torch.from_numpy(p), torch.from_numpy(t), 6)
    keep = target != 255
    ref = sk_confusion(target[keep], pred[keep], labels=list(range(6)))
    assert np.array_equal(cm.numpy(), ref)
    iou = np.diag(ref) / (ref.sum(0) + ref.sum(1) - np.diag(ref))
    s = scores(cm)
    assert np.isclose(s["miou"], iou.mean())
    assert np.isclose(s["pixel_acc"], np.diag(ref).sum() / ref.sum())
    freq = ref.sum(1) / ref.sum()
    assert np.isclose(s["fwiou"], (freq * iou).sum())


@pytest.mark.parametrize("never", ["predicted", "labelled", "neither"])
def test_dice_precision_recall_match_sklearn(never):
    """Per class and averaged over the classes the mIoU averages (those in the labels or the
    predictions): scikit-learn's precision_recall_fscore_support on the labelled pixels."""
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(1)
    target = rng.integers(0, 5, size=(3, 25, 25))
    target[rng.random(target.shape) < 0.1] = 255
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 5, target.shape)) % 5
    if never in ("predicted", "neither"):
        pred[pred == 3] = 0  # class 3 is labelled but never predicted
    if never in ("labelled", "neither"):
        target[target == 4] = 1  # class 4 is predicted but never labelled
    if never == "neither":
        pred[pred == 4] = 2
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 6)  # class 5: absent
    keep = target != 255
    labels = sorted(set(target[keep].tolist()) | set(pred[keep].tolist()))
    precision, recall, f1, _ = precision_recall_fscore_support(
        target[keep], pred[keep], labels=labels, average=None, zero_division=0)
    s = scores(cm)
    np.testing.assert_allclose(np.array(s["dice"])[labels], f1, rtol=1e-12)
    np.testing.assert_allclose(np.array(s["precision"])[labels], precision, rtol=1e-12)
    np.testing.assert_allclose(np.array(s["recall"])[labels], recall, rtol=1e-12)
    assert np.isnan(s["dice"][5])
    macro = precision_recall_fscore_support(target[keep], pred[keep], labels=labels,
                                            average="macro", zero_division=0)
    assert s["mprecision"] == pytest.approx(macro[0], rel=1e-12)
    assert s["mrecall"] == pytest.approx(macro[1], rel=1e-12)
    assert s["mdice"] == pytest.approx(np.mean(f1), rel=1e-12)


def test_absent_class_is_not_averaged():
    cm = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
    assert scores(cm)["miou"] == 1.0


def test_boundary_band_width():
    label = np.zeros((20, 20), dtype=np.uint8)
    label[:, 10:] = 1
    band = boundary_band(label, 2)
    assert band[:, 7:13].all() and not band[:, :7].any() and not band[:, 13:].any()


def test_flip_and_multiscale_average():
    class Constant(torch.nn.Module):
        output_stride = 1  # no padding needed
        mean = torch.zeros(1, 3, 1, 1)

        def forward(self, x):
            out = torch.zeros(x.shape[0], 2, *x.shape[-2:])
            out[:, 1] = x[:, 0] * 10  # logit follows the red channel
            return out

    x = torch.zeros(1, 3, 8, 8)
    x[..., :4] = 1.0
    p = predict_probs(Constant(), x, InferenceStrategy(flip=True))
    assert torch.allclose(p.sum(1), torch.ones(1, 8, 8))
    assert (p[0, 1, :, :3] > 0.99).all() and torch.allclose(p[0, 1, :, 5:], torch.tensor(0.5))
    assert torch.allclose(p, predict_probs(Constant(), x, InferenceStrategy()))
    assert predict_probs(Constant(), x, InferenceStrategy(scales=(0.5, 1.0))).shape == (1, 2, 8, 8)


def test_bootstrap_interval_against_a_direct_resampling():
    """scipy's percentile bootstrap (what evaluate reports) against resampling written out
    with numpy: the same resamples give the same interval."""
    from deeplab.evaluation.metrics import bootstrap_miou, image_counts, miou_of_counts

    rng = np.random.default_rng(1)
    per_image, cm = [], torch.zeros(4, 4, dtype=torch.long)
    for _ in range(40):
        target = torch.from_numpy(rng.integers(0, 4, (12, 12)))
        pred = torch.where(torch.from_numpy(rng.random((12, 12)) < 0.7), target,
                           torch.from_numpy(rng.integers(0, 4, (12, 12))))
        image_cm = confusion_matrix(pred, target, 4)
        cm += image_cm
        per_image.append(image_counts(image_cm))
    per_image = np.stack(per_image)
    total = per_image.sum(0)
    assert miou_of_counts(total) == pytest.approx(scores(cm)["miou"], abs=1e-12)
    low, high = bootstrap_miou(per_image, resamples=2000, seed=5)
    draws = np.random.default_rng(5)
    direct = [miou_of_counts(per_image[draws.integers(0, 40, 40)].sum(0)) for _ in range(2000)]
    assert low < miou_of_counts(total) < high
    assert abs(low - np.percentile(direct, 2.5)) < 0.01 and abs(high - np.percentile(direct, 97.5)) < 0.01


def test_the_summed_counts_give_the_splits_means_and_their_intervals_hold_them():
    """What the bootstrap resamples (`miou_of_counts`, `mdice_of_counts` of per-image counts)
    equals `scores` of the split's confusion matrix, a class never seen left out of both."""
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 50, (12, 5, 5))
    cms[:, 4, :] = 0
    cms[:, :, 4] = 0  # class 4: neither labelled nor predicted
    per_image = np.stack([image_counts(cm) for cm in cms])
    whole = scores(cms.sum(0))
    assert miou_of_counts(per_image.sum(0)) == pytest.approx(whole["miou"], abs=1e-12)
    assert mdice_of_counts(per_image.sum(0)) == pytest.approx(whole["mdice"], abs=1e-12)
    for score, value in ((miou_of_counts, whole["miou"]), (mdice_of_counts, whole["mdice"])):
        low, high = bootstrap_miou(per_image, score=score)
        assert low < value < high
