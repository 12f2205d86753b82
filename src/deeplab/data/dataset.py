"""The training/evaluation dataset over a processed split list, and its augmentation.

Augmentation randomness comes from a per-sample seed that the sampler derives from
(seed, iteration, slot), never from worker state: a run resumed at iteration k sees
exactly the batches an uninterrupted run would, with any number of loader workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..core.errors import BadSampleError, ConfigError, MissingFileError
from ..core.schema import ColorJitter, GaussianBlur
from .images import read_rgb
from .palette import IGNORE, read_label_png

MEAN_PIXEL = (124, 116, 104)  # ImageNet mean in uint8; the stages pass the backbone's own mean


def read_list(path: str | Path) -> pd.DataFrame:
    """A processed split list (id,image,mask)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: split list not found (run the preprocess stage)")
    rows = pd.read_csv(path, dtype=str)
    if list(rows.columns[:3]) != ["id", "image", "mask"]:
        raise BadSampleError(f"{path}: expected columns id,image,mask, got {','.join(rows.columns)}")
    return rows


def repeat_rows(rows: pd.DataFrame, ids: Sequence[str], times: int) -> pd.DataFrame:
    """Hard-image bootstrapping: rows whose id is in `ids` appear `times` times in all."""
    if times <= 1 or not len(ids):
        return rows
    extra = rows[rows["id"].isin(set(ids))]
    return pd.concat([rows] + [extra] * (times - 1), ignore_index=True)


def load_sample(image_path: str, mask_path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 `3 x H x W` image and int64 `H x W` label."""
    image = torch.from_numpy(read_rgb(image_path)).permute(2, 0, 1).contiguous()
    label = torch.from_numpy(read_label_png(mask_path).astype(np.int64))
    if tuple(label.shape) != tuple(image.shape[-2:]):
        raise BadSampleError(f"{mask_path}: mask size {tuple(label.shape)} differs from its image "
                         f"{tuple(image.shape[-2:])} ({image_path})")
    return image, label


def photometric(image: torch.Tensor, rng: np.random.Generator, jitter: ColorJitter | None,
                blur: GaussianBlur | None) -> torch.Tensor:
    """Colour jitter and Gaussian blur of a uint8 `3 x H x W` image (torchvision's transforms.v2
    functions), their random values drawn from `rng`."""
    if jitter is not None and rng.random() < jitter.p:
        factors = {name: rng.uniform(max(0.0, 1 - amount), 1 + amount)
                   for name, amount in (("brightness", jitter.brightness),
                                        ("contrast", jitter.contrast),
                                        ("saturation", jitter.saturation))}
        hue = rng.uniform(-jitter.hue, jitter.hue)
        for op in rng.permutation(4):
            if op == 0 and jitter.brightness:
                image = TF.adjust_brightness(image, factors["brightness"])
            elif op == 1 and jitter.contrast:
                image = TF.adjust_contrast(image, factors["contrast"])
            elif op == 2 and jitter.saturation:
                image = TF.adjust_saturation(image, factors["saturation"])
            elif op == 3 and jitter.hue:
                image = TF.adjust_hue(image, hue)
    if blur is not None and rng.random() < blur.p:
        sigma = float(rng.uniform(*blur.sigma))
        image = TF.gaussian_blur(image, [blur.kernel, blur.kernel], [sigma, sigma])
    return image


def augment(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator, crop: int,
            scale_range: Sequence[float], flip: bool, fill: Sequence[int] = MEAN_PIXEL,
            jitter: ColorJitter | None = None, blur: GaussianBlur | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, pad (image with the mean pixel `fill`, label with 255), random crop,
    horizontal flip; then colour jitter and blur of the image alone (`photometric`)."""
    img, lab = tv_tensors.Image(image), tv_tensors.Mask(label.unsqueeze(0))
    s = rng.uniform(*scale_range)
    h, w = img.shape[-2:]
    size = [max(1, round(h * s)), max(1, round(w * s))]
    img = TF.resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    lab = TF.resize(lab, size, interpolation=InterpolationMode.NEAREST)
    ph, pw = max(crop - size[0], 0), max(crop - size[1], 0)
    if ph or pw:
        img = torch.cat([TF.pad(img[c:c + 1], [0, 0, pw, ph], fill=int(fill[c])) for c in range(3)])
        lab = TF.pad(lab, [0, 0, pw, ph], fill=IGNORE)
    top = int(rng.integers(0, img.shape[-2] - crop + 1))
    left = int(rng.integers(0, img.shape[-1] - crop + 1))
    img, lab = TF.crop(img, top, left, crop, crop), TF.crop(lab, top, left, crop, crop)
    if flip and rng.random() < 0.5:
        img, lab = TF.horizontal_flip(img), TF.horizontal_flip(lab)
    img = img.as_subclass(torch.Tensor)
    if jitter is not None or blur is not None:
        img = photometric(img, rng, jitter, blur)
    return img.contiguous(), lab[0].as_subclass(torch.Tensor).contiguous()


class SegmentationDataset(Dataset):
    """Samples of a split list. Index with an int (no augmentation) or (index, seed)."""

    def __init__(self, rows: pd.DataFrame, crop: int | None = None,
                 scale_range: Sequence[float] = (0.5, 2.0), flip: bool = True,
                 fill: Sequence[int] = MEAN_PIXEL, jitter: ColorJitter | None = None,
                 blur: GaussianBlur | None = None) -> None:
        self.images = rows["image"].tolist()
        self.masks = rows["mask"].tolist()
        self.ids = rows["id"].tolist()
        self.crop, self.scale_range, self.flip = crop, tuple(scale_range), flip
        self.fill = tuple(int(v) for v in fill)
        self.jitter, self.blur = jitter, blur

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, label = load_sample(self.images[index], self.masks[index])
        if self.crop is not None and seed is not None:
            image, label = augment(image, label, np.random.default_rng(seed), self.crop,
                                   self.scale_range, self.flip, self.fill, self.jitter, self.blur)
        return image, label


class IterationSampler(Sampler):
    """Batches of (index, augmentation seed) for iterations `start..total-1`.

    The sample order is a fresh seeded permutation each epoch; batch `it` is a pure function
    of (seed, it), so resuming at any iteration reproduces the same stream. With several
    processes (DDP) each rank takes its slice of every global batch.
    """

    def __init__(self, size: int, batch_size: int, total: int, seed: int, start: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ConfigError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.size, self.batch_size, self.total, self.seed = size, batch_size, total, seed
        self.start, self.rank, self.world_size = start, rank, world_size

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if getattr(self, "_cached_epoch", None) != epoch:
            self._cached_epoch = epoch
            self._cached_order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return self._cached_order

    def batch(self, it: int) -> list[tuple[int, int]]:
        first = it * self.batch_size
        items = []
        for j in range(first, first + self.batch_size):
            epoch, pos = divmod(j, self.size)
            items.append((int(self._epoch_order(epoch)[pos]),
                          int(np.random.SeedSequence([self.seed, it, j - first]).generate_state(1)[0])))
        return items[self.rank::self.world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.total):
            yield self.batch(it)

    def __len__(self) -> int:
        return self.total - self.start
