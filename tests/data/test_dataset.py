"""The training dataset: augmentation padding and the resumable sampler."""

import numpy as np
import torch

from deeplab.data.dataset import IterationSampler, augment


def test_augment_pads_label_with_ignore():
    image = torch.full((3, 20, 20), 7, dtype=torch.uint8)
    label = torch.ones(20, 20, dtype=torch.int64)
    img, lab = augment(image, label, np.random.default_rng(0), crop=41, scale_range=(1.0, 1.0), flip=False)
    assert img.shape == (3, 41, 41) and lab.shape == (41, 41)
    assert (lab == 255).sum() == 41 * 41 - 400 and (lab == 1).sum() == 400
    assert set(img[0][lab == 255].unique().tolist()) == {124}


def test_sampler_is_a_pure_function_of_iteration():
    full = list(IterationSampler(10, 4, 6, seed=1))
    resumed = list(IterationSampler(10, 4, 6, seed=1, start=3))
    assert full[3:] == resumed
    ranks = [IterationSampler(10, 4, 6, seed=1, rank=r, world_size=2).batch(2) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(full[2])
