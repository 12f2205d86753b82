"""Cityscapes: `leftImg8bit` PNGs and `gtFine` official labelIds, void ids included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...core.io import save_image
from ...data.classes import IGNORE, cityscapes_labels
from .scene import Rare, render_scene, semantic_label

CLUTTER = 254  # a marker for clutter pixels in the Cityscapes writer (never a class id)
def write_cityscapes(root: Path, counts: dict[str, int], size: int, rng: np.random.Generator,
                     classes: object = None, rare: Rare | None = None) -> None:
    """`root/cityscapes/{leftImg8bit,gtFine}/{train,val}/<city>/` with official labelIds:
    each trainId drawn as its first labelId, ignore bands as 'unlabeled' (0), and some void
    id 'static' for clutter objects."""
    labels = cityscapes_labels()
    first_id = {}
    for label in labels:
        if 0 <= label.trainId < 255:
            first_id.setdefault(label.trainId, label.id)
    lookup = np.zeros(256, dtype=np.uint8)
    for train_id, label_id in first_id.items():
        lookup[train_id] = label_id
    lookup[IGNORE] = 0                                  # unlabeled
    lookup[CLUTTER] = next(label.id for label in labels if label.name == "static")
    cities = {"train": ("aachen", "bremen"), "val": ("frankfurt",)}
    for split, count in counts.items():
        for k in range(count):
            city = cities[split][k % len(cities[split])]
            name = f"{city}_{k:06d}_000019"
            img, instances = render_scene(rng, size, len(first_id), rare)
            label = lookup[semantic_label(instances, size, clutter_value=CLUTTER)]
            image_path = root / "cityscapes" / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
            label_path = root / "cityscapes" / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            label_path.parent.mkdir(parents=True, exist_ok=True)
            save_image(image_path, Image.fromarray(img), format="PNG")
            save_image(label_path, Image.fromarray(label, mode="L"), format="PNG")


