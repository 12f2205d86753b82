"""COCO JSON, as labelling tools export it (CVAT, Label Studio, Roboflow). Two arrangements are
found by themselves:

- `images/{train,val}/` with `annotations/instances_{train,val}.json`;
- Roboflow's: `train/` and `valid/` folders, each with its images and `_annotations.coco.json`;

other names through `data.coco_files` (paths below the root). Classes come from the
categories by name: by default background, then every category that has an annotation, in id
order (Roboflow's unused category 0, named after the project, is left out); `data.classes`
picks and orders them and `data.coco_map` merges them ({category: class}). Masks follow
`prepare.coco`'s rules (overlaps, crowd = ignore); an image without annotations is background.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...core.errors import BadSampleError, MissingFileError
from ..samples import SampleGuard
from .common import Layout, LayoutOptions, Sample, TargetSplits, below

ARRANGEMENTS = (  # {split: (images folder, annotation file)} below the root
    {"train": ("images/train", "annotations/instances_train.json"),
     "val": ("images/val", "annotations/instances_val.json")},
    {"train": ("train", "train/_annotations.coco.json"),
     "val": ("valid", "valid/_annotations.coco.json")},
)
FILE_KEYS = ("train_images", "train_annotations", "val_images", "val_annotations")


def split_files(root: Path, options: LayoutOptions) -> dict[str, tuple[Path, Path]]:
    """{split: (images folder, annotation file)}: `data.coco_files` if set, else the first
    arrangement whose annotation files exist."""
    if options.coco_files:
        given = {split: (root / options.coco_files[f"{split}_images"],
                         root / options.coco_files[f"{split}_annotations"]) for split in ("train", "val")}
        missing = [str(p) for pair in given.values() for p in pair if not p.exists()]
        if missing:
            raise MissingFileError(f"data.coco_files: {', '.join(missing)} not found")
        return given
    for arrangement in ARRANGEMENTS:
        found = {split: (root / images, root / ann) for split, (images, ann) in arrangement.items()}
        if all(ann.is_file() for _, ann in found.values()):
            return found
    raise MissingFileError(f"data.root: {root} holds neither annotations/instances_{{train,val}}.json "
                           f"nor Roboflow's {{train,valid}}/_annotations.coco.json; set "
                           f"data.coco_files to name yours")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadSampleError(f"{path}: not a readable COCO JSON file ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise BadSampleError(f"{path}: not a COCO instances file (needs images, annotations and "
                             f"categories lists)")
    return data


def coco_splits(root: Path, options: LayoutOptions, guard: SampleGuard) -> TargetSplits:
    """One sample per image listed in each split's annotation file."""
    splits = {}
    for split, (images, ann_file) in split_files(root, options).items():
        samples, seen = [], {}
        for image in read_json(ann_file)["images"]:
            try:
                name, image_id = str(image["file_name"]), int(image["id"])
            except (KeyError, TypeError, ValueError) as exc:
                raise BadSampleError(f"{ann_file}: an image entry without file_name/id ({exc})") from None
            try:
                name = below(name, f"{ann_file}: image {image_id} file_name")
            except BadSampleError as exc:
                guard(exc)
                continue
            stem = Path(name).with_suffix("").as_posix()
            if stem in seen:
                guard(BadSampleError(f"{ann_file}: images {seen[stem]} and {image_id} share the "
                                     f"file name {stem}"))
                continue
            seen[stem] = image_id
            samples.append(Sample(stem, images / name, ann_file, "coco", image_id))
        splits[split] = samples
    return TargetSplits(splits["train"], splits["val"])


def coco_classes(root: Path | None, options: LayoutOptions) -> list[str] | None:
    """Background, then the (merged) names of every category with an annotation, in id order."""
    if root is None:
        return None
    names: dict[int, str] = {}
    used: set[int] = set()
    for _, ann_file in split_files(root, options).values():
        data = read_json(ann_file)
        names.update({int(c["id"]): str(c["name"]) for c in data["categories"]})
        used |= {int(a["category_id"]) for a in data["annotations"]}
    merged = [options.coco_map.get(names[i], names[i]) for i in sorted(used) if i in names]
    return ["background"] + [n for n in dict.fromkeys(merged) if n != "background"]


COCO = Layout(
    "coco", tuple(tuple(ann for _, ann in a.values()) for a in ARRANGEMENTS), coco_splits,
    classes=coco_classes,
    download="data.source: a COCO-JSON dataset is your own export; set data.source: local and "
             "data.root to the folder holding it")
