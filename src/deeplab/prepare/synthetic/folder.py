"""A folder of images and masks: JPEG and PNG images, single-channel and palette masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...core.io import save_image
from ...data.classes import ClassList
from ...data.palette import save_label_png
from .scene import Rare, raw_label, render_scene, save_jpeg, semantic_label


def write_folder(root: Path, counts: dict[str, int], size: int, rng: np.random.Generator,
                 classes: ClassList, rare: Rare | None = None) -> None:
    """`root/folder/{images,masks}/{train,val}`: JPEG and PNG images; masks alternate between
    single-channel (values = class ids) and palette PNGs, the ignore band at `ignore_index`."""
    for split, count in counts.items():
        for k in range(count):
            name = f"{split}_{k:05d}"
            img, instances = render_scene(rng, size, len(classes), rare)
            suffix = ".png" if k % 3 == 2 else ".jpg"
            image_path = root / "folder" / "images" / split / f"{name}{suffix}"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            if suffix == ".jpg":
                save_jpeg(image_path, img)
            else:
                save_image(image_path, Image.fromarray(img), format="PNG")
            label = raw_label(semantic_label(instances, size), classes.ignore_index,
                              classes.reduce_zero_label)
            mask_path = root / "folder" / "masks" / split / f"{name}.png"
            if k % 2:
                save_label_png(mask_path, label, classes.palette)
            else:
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                save_image(mask_path, Image.fromarray(label, mode="L"), format="PNG")


