"""The target dataset's layouts: one `Layout` description each (`LAYOUTS`), keyed by the names
of `core.choices.data.LAYOUTS` (checked here when it loads).

Adding one: a module here with its `Layout` (required folders, split discovery, default
classes, label rules, download), its entry below, and its name in `choices/data.py`. A
writer in the built-in generator is optional (`prepare.synthetic.WRITERS`): without one,
`data.source: synthetic` refuses the layout in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ...core.choices import data as choices
from ...core.errors import ConfigError
from ...data.classes import VOC_CLASSES, ClassList
from ..samples import SampleGuard
from .ade20k import ADE20K
from .cityscapes import CITYSCAPES
from .coco import COCO
from .common import (
    IMAGE_SUFFIXES,
    Layout,
    LayoutOptions,
    Sample,
    TargetSplits,
    below,
    read_id_list,
)
from .folder import FOLDER
from .voc import VOC

__all__ = ["IMAGE_SUFFIXES", "LAYOUTS", "Layout", "LayoutOptions", "Sample", "TargetSplits", "below",
           "layout", "read_id_list", "resolve_classes", "target_splits"]
LAYOUTS: dict[str, Layout] = {x.name: x for x in (VOC, FOLDER, CITYSCAPES, COCO, ADE20K)}
if tuple(LAYOUTS) != choices.LAYOUTS:
    raise ImportError(f"prepare.layouts {tuple(LAYOUTS)} differ from core.choices.data.LAYOUTS")


def layout(name: str) -> Layout:
    """The layout called `name`; ConfigError naming the choices for any other."""
    if name not in LAYOUTS:
        raise ConfigError(f"data.layout: unknown layout {name!r} (choose one of {', '.join(LAYOUTS)})")
    return LAYOUTS[name]


def options_of(data: Mapping[str, Any]) -> LayoutOptions:
    """The layout options a manifest (or `params.data` as a dict) records."""
    return LayoutOptions(Path(data["sbd_root"]) if data.get("sbd_root") else None,
                         dict(data.get("coco_files") or {}), dict(data.get("coco_map") or {}))


def target_splits(name: str, root: Path, options: LayoutOptions, guard: SampleGuard) -> TargetSplits:
    """The train and val samples of the target dataset in layout `name`."""
    return layout(name).splits(root, options, guard)


def resolve_classes(name: str, classes: Sequence[str] | None,
                    palette: Sequence[Sequence[int]] | None, ignore_index: int,
                    root: Path | None = None, options: LayoutOptions = LayoutOptions(),
                    reduce_zero_label: bool | None = None) -> ClassList:
    """The class list `params.data` describes (`classes: null` = the layout's own, read from
    `root` where the layout keeps it in the data)."""
    spec = layout(name)
    names = spec.classes(root, options)
    if spec.fixed_classes and classes is not None and list(classes) != names:
        raise ConfigError(f"data.classes: the {name} layout maps its label ids to its "
                          f"{len(names)} official classes; leave data.classes null")
    names = list(classes) if classes is not None else list(names or VOC_CLASSES)
    colours = [tuple(c) for c in (palette if palette is not None else spec.colours(len(names)))]
    if len(colours) != len(names):
        raise ConfigError(f"data.palette: {len(colours)} colours for {len(names)} classes; give "
                          f"one [r, g, b] per class, or null for the default colours")
    owner: dict[tuple, str] = {}
    for class_name, colour in zip(names, colours):
        if colour in owner:
            raise ConfigError(f"data.palette: {list(colour)} is the colour of both "
                              f"'{owner[colour]}' and '{class_name}'; every class needs its own "
                              f"(an RGB mask could not tell them apart)")
        owner[colour] = class_name
    reduce = spec.reduce_zero_label if reduce_zero_label is None else reduce_zero_label
    if reduce and (spec.lookup is not None or name == "coco"):
        raise ConfigError(f"data.reduce_zero_label: the {name} layout's labels are mapped by "
                          f"{'its official table' if spec.lookup else 'category name'}; leave it null")
    if ignore_index < len(names) and not (reduce and ignore_index == 0):
        hint = (" For masks where 0 means unlabeled (ADE20K's convention) set "
                "data.reduce_zero_label: true: 0 is ignored and k becomes class k-1."
                if ignore_index == 0 else "")
        raise ConfigError(f"data.ignore_index: {ignore_index} is the id of class "
                          f"'{names[ignore_index]}'; the ignore value must be >= the class count "
                          f"({len(names)}), e.g. 255.{hint}")
    return ClassList(tuple(names), tuple(colours), ignore_index, reduce)
