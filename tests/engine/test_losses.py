"""Losses: each equal to its peer on the same logits and labels (torch, segmentation-models-
pytorch, a direct computation of the TF original's hard-pixel mining), ignore pixels excluded;
class weights against scikit-learn; one table behind the schema's choices."""

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from deeplab.core.choices import losses as choices
from deeplab.core.errors import ConfigError
from deeplab.engine.losses import (
    LOSSES,
    Objective,
    class_weights,
    kept_fraction,
    parse_loss,
)


def batch(seed=0, classes=5, n=2, size=12):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, size, size, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, classes - 1, (n, size, size), generator=g)  # the last class absent
    labels[:, :2] = 255
    return logits.requires_grad_(), labels


def same(ours, theirs, logits):
    """Equal values and equal gradients with respect to the logits."""
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9, abs=1e-12)
    g1, = torch.autograd.grad(ours, logits, retain_graph=True)
    g2, = torch.autograd.grad(theirs, logits, retain_graph=True)
    assert torch.allclose(g1, g2, rtol=1e-7, atol=1e-12)


def test_the_table_is_what_the_schema_accepts():
    assert tuple(LOSSES) == choices.LOSSES  # (the table checks it too when it loads)
    assert parse_loss("ce+0.5*dice") == [(1.0, "ce"), (0.5, "dice")]
    with pytest.raises(ConfigError, match="'dyce' is not a loss"):
        parse_loss("ce+dyce")


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 3.0, 0.25]])
def test_ce_is_torchs_weighted_mean(weights):
    logits, labels = batch()
    w = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    same(Objective("ce", weights)(logits, labels),
         F.cross_entropy(logits, labels, weight=w, ignore_index=255), logits)


W = [0.5, 2.0, 1.0, 3.0, 0.25]
PEERS = {"focal": lambda w: smp.losses.FocalLoss("multiclass", ignore_index=255, class_weights=w),
         "dice": lambda w: smp.losses.DiceLoss("multiclass", ignore_index=255, class_weights=w),
         "lovasz": lambda w: smp.losses.LovaszLoss("multiclass", ignore_index=255)}


@pytest.mark.parametrize("name, weights", [("focal", None), ("focal", W), ("dice", None),
                                           ("dice", W), ("lovasz", None)])
def test_focal_dice_and_lovasz_equal_segmentation_models_pytorch(name, weights):
    """(smp's LovaszLoss takes no class weights, and computes its gradient in float32.)"""
    logits, labels = batch(seed=1)
    if name == "lovasz":
        logits = logits.detach().float().requires_grad_()
    ours, theirs = Objective(name, weights)(logits, labels), PEERS[name](weights)(logits, labels)
    if name == "lovasz":
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
        g1, = torch.autograd.grad(ours, logits, retain_graph=True)
        g2, = torch.autograd.grad(theirs, logits)
        assert torch.allclose(g1, g2, rtol=1e-5, atol=1e-7)
    else:
        same(ours, theirs, logits)


def test_ohem_keeps_the_hardest_pixels_with_the_tf_ramp():
    logits, labels = batch(seed=2)
    pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    valid = pixel[labels != 255]
    for iteration, fraction in ((0, 1.0), (50, 0.6), (100, 0.2), (500, 0.2)):
        assert kept_fraction(0.2, 100, iteration) == pytest.approx(fraction)
        k = int(fraction * valid.numel())
        expected = valid.topk(k).values.mean()  # the mean of the k largest pixel losses
        same(Objective("ohem", top_k=0.2, mining_steps=100)(logits, labels, iteration), expected, logits)
    assert Objective("ohem", top_k=1.0)(logits, labels).item() == pytest.approx(
        F.cross_entropy(logits, labels, ignore_index=255).item())


def test_weighted_sums_add_their_terms():
    logits, labels = batch(seed=3)
    total = Objective("ce+0.5*dice+lovasz")(logits, labels)
    parts = [Objective(n)(logits, labels) for n in ("ce", "dice", "lovasz")]
    assert total.item() == pytest.approx(parts[0].item() + 0.5 * parts[1].item() + parts[2].item())


def test_class_weights_from_pixel_counts():
    pixels = [600, 30, 0, 120]
    labels = np.repeat([0, 1, 3], [600, 30, 120])
    balanced = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=labels)
    ours = class_weights("inverse_frequency", pixels)
    assert ours[2] == 0.0 and np.allclose(np.array(ours)[[0, 1, 3]], balanced)
    freq = np.array([600, 30, 120]) / 750
    assert np.allclose(np.array(class_weights("median_frequency", pixels))[[0, 1, 3]],
                       np.median(freq) / freq)
    assert class_weights([1, 2, 3, 4], pixels) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ConfigError, match="3 weights for 4 classes"):
        class_weights([1, 2, 3], pixels)
