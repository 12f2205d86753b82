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


def _sample(seed: int = 0):
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.integers(0, 256, (3, 30, 40), dtype=np.uint8))
    label = torch.from_numpy(rng.integers(0, 5, (30, 40))).long()
    label[:5] = 255
    return image, label


def test_photometric_changes_the_image_alone():
    """Colour jitter and blur after the geometry: the same seed gives the same crop, flip and
    label pixel for pixel (ignored pixels included); the image differs."""
    from deeplab.core.schema import ColorJitter, GaussianBlur

    image, label = _sample()
    plain = augment(image, label, np.random.default_rng(7), 41, (0.75, 1.5), True)
    jittered = augment(image, label, np.random.default_rng(7), 41, (0.75, 1.5), True,
                       jitter=ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
                       blur=GaussianBlur(kernel=5, sigma=[0.5, 1.5], p=1.0))
    assert torch.equal(plain[1], jittered[1])
    assert not torch.equal(plain[0], jittered[0]) and jittered[0].dtype == torch.uint8


def test_colour_jitter_is_torchvisions_on_the_drawn_factor():
    """Brightness alone: the image equals torchvision.transforms.v2.ColorJitter's at the factor
    the sample's generator drew."""
    from torchvision.transforms import v2

    from deeplab.core.schema import ColorJitter
    from deeplab.data.dataset import photometric

    image, _ = _sample(1)
    ours = photometric(image, np.random.default_rng(3), ColorJitter(brightness=0.5), None)
    replay = np.random.default_rng(3)
    replay.random()  # p
    factor = replay.uniform(0.5, 1.5)
    theirs = v2.ColorJitter(brightness=(factor, factor))(image)
    assert torch.equal(ours, theirs)


def test_the_same_seed_gives_the_same_batches_on_one_or_two_loader_workers(tiny_train_csv):
    from torch.utils.data import DataLoader

    from deeplab.core.schema import ColorJitter, GaussianBlur
    from deeplab.data.dataset import SegmentationDataset, read_list

    data = SegmentationDataset(read_list(tiny_train_csv), 33, (0.5, 2.0), True,
                               jitter=ColorJitter(brightness=0.3, hue=0.05),
                               blur=GaussianBlur(p=0.5))

    def batches(workers):
        loader = DataLoader(data, batch_sampler=IterationSampler(len(data), 2, 4, seed=5),
                            num_workers=workers)
        return list(loader)

    one, two = batches(0), batches(2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))
    assert len(one) == 4
