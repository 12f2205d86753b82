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
    """labelId (0..255) -> trainId, 255 for ignored and unknown ids (the official table)."""
    table = [IGNORE] * 256
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
        return {"names": list(self.names), "palette": [list(c) for c in self.palette],
                "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClassList":
        return cls(tuple(data["names"]), tuple(tuple(c) for c in data["palette"]),
                   int(data.get("ignore_index", IGNORE)))

    @classmethod
    def default(cls, num_classes: int) -> "ClassList":
        """What a model file without a class list stands for: VOC's 21 names, else numbers."""
        names = VOC_CLASSES if num_classes == len(VOC_CLASSES) else \
            tuple(f"class_{i}" for i in range(num_classes))
        return cls(names, tuple(voc_palette(num_classes)))


def resolve_classes(layout: str, classes: Sequence[str] | None,
                    palette: Sequence[Sequence[int]] | None, ignore_index: int) -> ClassList:
    """The class list `params.data` describes (`classes: null` = the layout's own)."""
    if layout == "cityscapes":
        names, colours = cityscapes_classes()
        if classes is not None and list(classes) != names:
            raise ConfigError("data.classes: the cityscapes layout maps labelIds to the 19 official "
                              "trainId classes; leave data.classes null")
    else:
        names = list(classes) if classes is not None else list(VOC_CLASSES)
        colours = voc_palette(len(names))
    if palette is not None:
        if len(palette) != len(names):
            raise ConfigError(f"data.palette: {len(palette)} colours for {len(names)} classes; give "
                              f"one [r, g, b] per class, or null for the default colours")
        colours = [tuple(c) for c in palette]
    if ignore_index < len(names):
        raise ConfigError(f"data.ignore_index: {ignore_index} is the id of class "
                          f"'{names[ignore_index]}'; the ignore value must be >= the class count "
                          f"({len(names)}), e.g. 255")
    return ClassList(tuple(names), tuple(colours), ignore_index)


def hard_class_ids(classes: ClassList, hard_classes: Sequence[str] | None) -> list[int]:
    """Ids of the hard classes for bootstrapping (`null`: the paper's five when the class list
    is VOC's, none otherwise)."""
    if hard_classes is None:
        return classes.ids(VOC_HARD_CLASSES, "preprocess.hard_classes") \
            if classes.names == VOC_CLASSES else []
    return classes.ids(hard_classes, "preprocess.hard_classes")


def coco_class_map(classes: ClassList, category_names: Sequence[str],
                   coco_map: Mapping[str, str] | None, where: str) -> dict[str, int]:
    """{COCO category name: class id}: `coco_map` if given, else same names plus the paper's VOC
    synonyms. Every other category is background. ConfigError for a map naming an unknown
    class or a category `where` (the annotation file) does not have."""
    if coco_map is None:
        pairs = {name: name for name in category_names if name in classes.names}
        pairs.update({c: v for c, v in COCO_SYNONYMS.items()
                      if c in category_names and v in classes.names})
    else:
        missing = [name for name in coco_map if name not in category_names]
        if missing:
            raise ConfigError(f"data.coco_map: {', '.join(map(repr, missing))} "
                              f"{'is not a category' if len(missing) == 1 else 'are not categories'}"
                              f" of {where} (categories: {', '.join(sorted(category_names))})")
        pairs = dict(coco_map)
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
