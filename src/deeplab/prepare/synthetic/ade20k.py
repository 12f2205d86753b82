"""ADE20K (ADEChallengeData2016): JPEG images and single-channel annotation PNGs where 0 is
"other/unlabeled" (the ignore band) and class k is stored as k+1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...core.io import save_image
from ...data.classes import ClassList
from .scene import Rare, raw_label, render_scene, save_jpeg, semantic_label


def write_ade20k(root: Path, counts: dict[str, int], size: int, rng: np.random.Generator,
                 classes: ClassList, rare: Rare | None = None) -> None:
    """`root/ADEChallengeData2016/{images,annotations}/{training,validation}/`."""
    ade = root / "ADEChallengeData2016"
    for split, folder in (("train", "training"), ("val", "validation")):
        for k in range(counts[split]):
            name = f"ADE_{split}_{k + 1:08d}"
            img, instances = render_scene(rng, size, len(classes), rare)
            (ade / "images" / folder).mkdir(parents=True, exist_ok=True)
            save_jpeg(ade / "images" / folder / f"{name}.jpg", img)
            label = raw_label(semantic_label(instances, size), 0, reduce_zero_label=True)
            save_image(ade / "annotations" / folder / f"{name}.png",
                       Image.fromarray(label, mode="L"), format="PNG")
