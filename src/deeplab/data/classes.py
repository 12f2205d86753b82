"""The class list of a dataset: names in label-id order, a colour per class, the ignore value.

Every stage reads the class list from the data (fetch writes it into the manifest, preprocess
into `classes.json` beside the split lists), and every model file carries it, so that the
class count, the reports, the palette PNGs and the registered model follow the dataset
without a code change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.errors import ConfigError, MissingFileError

IGNORE = 255  # the ignore value of every processed mask (the raw one is `data.ignore_index`)
IGNORE_COLOUR = (224, 224, 192)  # VOC's colour of the "void" band

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
# ADE20K's 150 classes (ADEChallengeData2016 objectInfo150, short names), ids 1..150 in its masks.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)
VOC_HARD_CLASSES = ("bicycle", "chair", "diningtable", "pottedplant", "sofa")  # DeepLabv3 appendix
# COCO's names of the VOC classes where they differ (the paper's COCO -> VOC mapping).
COCO_SYNONYMS = {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa",
                 "tv": "tvmonitor", "dining table": "diningtable", "potted plant": "pottedplant"}


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The standard VOC bit-interleaved colour map for ids 0..n-1."""
    colours = []
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return colours


def cityscapes_labels() -> list[Any]:
    """The official Cityscapes label table (`cityscapesscripts.helpers.labels.labels`)."""
    from cityscapesscripts.helpers.labels import labels

    return list(labels)


def cityscapes_classes() -> tuple[list[str], list[tuple[int, int, int]]]:
    """The 19 trainId classes (names as cityscapesscripts writes them) and their colours."""
    by_train_id = {}
    for label in cityscapes_labels():
        if 0 <= label.trainId < 255 and label.trainId not in by_train_id:
            by_train_id[label.trainId] = label
    ids = sorted(by_train_id)
    return [by_train_id[i].name for i in ids], [tuple(by_train_id[i].color) for i in ids]


def cityscapes_lookup() -> list[int]:
    """labelId (0..255) -> trainId by the official table: 255 for the ids it ignores, -1 for
    ids it does not have (an error naming the file, never a silent ignore)."""
    table = [-1] * 256
    for label in cityscapes_labels():
        if 0 <= label.id < 256:
            table[label.id] = label.trainId if 0 <= label.trainId < 255 else IGNORE
    return table


@dataclass(frozen=True)
class ClassList:
    """Class names in label-id order, one RGB colour per class, and the raw ignore value."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE
    reduce_zero_label: bool = False  # raw 0 = unlabeled, raw k = class k-1 (ADE20K)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "palette", tuple(tuple(int(v) for v in c) for c in self.palette))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def background(self) -> int | None:
        """The id of a class named 'background' (what unannotated COCO pixels become)."""
        return self.names.index("background") if "background" in self.names else None

    def ids(self, names: Sequence[str], key: str) -> list[int]:
        """Ids of `names`; ConfigError naming `key` for a name that is not a class."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise ConfigError(f"{key}: {', '.join(map(repr, unknown))} "
                              f"{'is not a class' if len(unknown) == 1 else 'are not classes'} of "
                              f"the dataset (classes: {', '.join(self.names)})")
        return [self.names.index(n) for n in names]

    def as_dict(self) -> dict[str, Any]:
        out = {"names": list(self.names), "palette": [list(c) for c in self.palette],
               "ignore_index": self.ignore_index}
        return out | ({"reduce_zero_label": True} if self.reduce_zero_label else {})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClassList":
        return cls(tuple(data["names"]), tuple(tuple(c) for c in data["palette"]),
                   int(data.get("ignore_index", IGNORE)), bool(data.get("reduce_zero_label", False)))

    @classmethod
    def default(cls, num_classes: int) -> "ClassList":
        """What a model file without a class list stands for: VOC's 21 names, else numbers."""
        names = VOC_CLASSES if num_classes == len(VOC_CLASSES) else \
            tuple(f"class_{i}" for i in range(num_classes))
        return cls(names, tuple(voc_palette(num_classes)))


def hard_class_ids(classes: ClassList, hard_classes: Sequence[str] | None) -> list[int]:
    """Ids of the hard classes for bootstrapping (`null`: the paper's five when the class list
    is VOC's, none otherwise)."""
    if hard_classes is None:
        return classes.ids(VOC_HARD_CLASSES, "preprocess.hard_classes") \
            if classes.names == VOC_CLASSES else []
    return classes.ids(hard_classes, "preprocess.hard_classes")


def coco_class_map(classes: ClassList, category_names: Sequence[str],
                   coco_map: Mapping[str, str] | None, where: str,
                   merge: bool = False) -> dict[str, int]:
    """{COCO category name: class id}: `coco_map` if given, else same names plus the paper's VOC
    synonyms. Every other category is background. ConfigError for a map naming an unknown
    class or a category `where` (the annotation file) does not have."""
    if coco_map is None:
        pairs = {name: name for name in category_names if name in classes.names}
        pairs.update({c: v for c, v in COCO_SYNONYMS.items()
                      if c in category_names and v in classes.names})
    elif not merge:
        missing = [name for name in coco_map if name not in category_names]
        if missing:
            raise ConfigError(f"data.coco_map: {', '.join(map(repr, missing))} "
                              f"{'is not a category' if len(missing) == 1 else 'are not categories'}"
                              f" of {where} (categories: {', '.join(sorted(category_names))})")
        pairs = dict(coco_map)
    if merge:  # a COCO-JSON target: same names, merged by the map's entries for this file's categories
        pairs = {name: name for name in category_names if name in classes.names} | \
            {c: v for c, v in (coco_map or {}).items() if c in category_names}
    ids = classes.ids(list(pairs.values()), "data.coco_map")
    return dict(zip(pairs, ids))


def write_classes(path: Path, classes: ClassList) -> None:
    from ..core.io import write_json

    write_json(path, classes.as_dict())


def read_classes(path: str | Path) -> ClassList:
    """The class list the preprocess stage wrote (`classes.json`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: class list not found (run the preprocess stage)")
    try:
        return ClassList.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a class list ({exc})") from None
