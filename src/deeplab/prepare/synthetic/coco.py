"""COCO 2017 instances: polygons, compressed RLE and crowd regions (uncompressed RLE), with
COCO's own category ids and names for VOC's classes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ...data.classes import COCO_SYNONYMS, VOC_CLASSES, ClassList
from .scene import OTHER_CATEGORIES, Instance, Rare, render_scene, save_jpeg

# COCO category ids of the VOC classes 1..20, in VOC order (torchvision's CAT_LIST).
COCO_IDS_OF_VOC = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
COCO_NAME_OF_VOC = {voc: coco for coco, voc in COCO_SYNONYMS.items()}
@dataclass(frozen=True)
class CocoCategories:
    """COCO category (id, name) of each object class, and of the clutter categories."""

    of_class: dict[int, tuple[int, str]]
    clutter: dict[int, str]

    @classmethod
    def for_classes(cls, classes: ClassList, coco_names: bool = True) -> "CocoCategories":
        """VOC's classes keep COCO's own ids and names (`coco_names`); other lists number their
        classes."""
        if classes.names == VOC_CLASSES and coco_names:
            of_class = {k: (cid, COCO_NAME_OF_VOC.get(VOC_CLASSES[k], VOC_CLASSES[k]))
                        for k, cid in enumerate(COCO_IDS_OF_VOC, start=1)}
        else:
            of_class = {k: (k, name) for k, name in enumerate(classes.names) if k > 0}
        taken = {name for _, name in of_class.values()} | set(classes.names)
        used_ids = {cid for cid, _ in of_class.values()}
        clutter = {cid if cid not in used_ids else 1000 + cid: name
                   for cid, name in OTHER_CATEGORIES.items() if name not in taken}
        return cls(of_class, clutter)

    def category(self, inst: Instance) -> int | None:
        if inst.class_id:
            return self.of_class[inst.class_id][0]
        return next((cid for cid, name in self.clutter.items()
                     if name == OTHER_CATEGORIES[inst.clutter]), None)

    def as_json(self) -> list[dict]:
        cats = [{"id": cid, "name": name, "supercategory": "target"}
                for cid, name in self.of_class.values()]
        cats += [{"id": cid, "name": name, "supercategory": "other"}
                 for cid, name in self.clutter.items()]
        return sorted(cats, key=lambda c: c["id"])


def write_coco(root: Path, split: str, count: int, size: int, rng: np.random.Generator,
               first_id: int, categories: CocoCategories, num_classes: int = 21) -> None:
    """`root/{split}2017/*.jpg` + `root/annotations/instances_{split}2017.json`."""
    write_instances(root / f"{split}2017", root / "annotations" / f"instances_{split}2017.json",
                    count, size, rng, first_id, categories, num_classes)


def write_roboflow(root: Path, counts: dict[str, int], size: int, rng: np.random.Generator,
                   classes: ClassList, rare: Rare | None = None) -> None:
    """A COCO-JSON target as Roboflow exports it: `root/roboflow/{train,valid}/` holding the
    images and `_annotations.coco.json`, with category 0 named after the project and unused."""
    # only the project's own classes: clutter objects are not labelled in a labelling tool
    categories = CocoCategories(CocoCategories.for_classes(classes, coco_names=False).of_class, {})
    project = {"id": 0, "name": "deeplab-synthetic", "supercategory": "none"}
    for split, folder in (("train", "train"), ("val", "valid")):
        write_instances(root / "roboflow" / folder, root / "roboflow" / folder /
                        "_annotations.coco.json", counts[split], size, rng,
                        0 if split == "train" else 100_000, categories, len(classes), project,
                        rare)


def write_instances(img_dir: Path, ann_file: Path, count: int, size: int,
                    rng: np.random.Generator, first_id: int, categories: CocoCategories,
                    num_classes: int = 21, extra_category: dict | None = None,
                    rare: Rare | None = None) -> None:
    """`count` images in `img_dir` and their instances in the COCO JSON file `ann_file`."""
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = first_id * 100
    for k in range(count):
        image_id = first_id + k
        name = f"{image_id:012d}.jpg"
        img, instances = render_scene(rng, size, num_classes, rare)
        save_jpeg(img_dir / name, img)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for inst in instances:
            ann_id += 1
            category = categories.category(inst)
            rle = mask_utils.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
            seg = inst.segmentation
            if not inst.iscrowd and rng.random() < 0.1:  # some instances as compressed RLE
                seg = {"counts": rle["counts"].decode("ascii"), "size": list(rle["size"])}
            if category is None:
                continue
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": category,
                "segmentation": seg, "area": float(mask_utils.area(rle)),
                "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                "iscrowd": inst.iscrowd})
    cats = ([extra_category] if extra_category else []) + categories.as_json()
    data = {"info": {"description": "deeplab synthetic COCO", "version": "1.0"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": cats}
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(data))


