"""What every layout shares: a sample (an image and where its label is), the two splits, and
the helpers that pair images with label files."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Callable, Sequence

from ...core.errors import BadSampleError, MissingFileError
from ...data.classes import voc_palette
from ..samples import SampleGuard

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Sample:
    """One image and its label: a file (`kind` png | mat | labelids, how it is read), or an
    image of a COCO annotation file (`kind` coco, `coco_id` its image id)."""

    id: str
    image: Path
    label: Path
    kind: str = "png"
    coco_id: int | None = None


@dataclass
class TargetSplits:
    train: list[Sample]
    val: list[Sample]
    removed_train_in_val: int = 0


@dataclass(frozen=True)
class LayoutOptions:
    """The `params.data` settings that change how a layout finds its files."""

    sbd_root: Path | None = None
    coco_files: dict[str, str] = field(default_factory=dict)  # {train_images: path, ...}
    coco_map: dict[str, str] = field(default_factory=dict)    # {category name: class name}


Colours = list[tuple[int, int, int]]


@dataclass(frozen=True)
class Layout:
    """Everything the pipeline knows of one dataset layout (`data.layout`).

    `required`: alternative sets of paths a local root must hold (one set is enough);
    `splits(root, options, guard)`: the train and val samples; `classes(root, options)`: the
    default class names (None: VOC's), `colours(n)`: their default palette; `fixed_classes`:
    the names cannot be changed (an official table maps the labels); `lookup()`: raw label ids
    -> class ids (-1 for ids outside the table); `reduce_zero_label`: the default of
    `data.reduce_zero_label` (0 = unlabeled, k -> k-1); `download`: None when `source:
    download` fetches it, else the one line that says how to get it.
    """

    name: str
    required: tuple[tuple[str, ...], ...]
    splits: Callable[[Path, LayoutOptions, SampleGuard], TargetSplits]
    classes: Callable[[Path | None, LayoutOptions], list[str] | None] = lambda root, options: None
    colours: Callable[[int], Colours] = voc_palette
    fixed_classes: bool = False
    lookup: Callable[[], Sequence[int]] | None = None
    reduce_zero_label: bool = False
    download: str | None = None


def examples(values: list) -> str:
    return ", ".join(map(str, values[:5])) + (f" and {len(values) - 5} more" if len(values) > 5 else "")


def below(entry: str, source: Path | str) -> str:
    """A path read from a dataset file (a COCO `file_name`, a split list's id), normalised;
    BadSampleError naming the entry and `source` when it is empty, absolute or climbs out of
    the folder it is relative to (`..`): nothing read from a dataset names a file elsewhere,
    and no output path is built from one that could leave its folder."""
    text = str(entry)
    norm = posixpath.normpath(text.replace("\\", "/")) if text else ""
    if (not text or "\x00" in text or norm.startswith("/") or PureWindowsPath(text).drive
            or norm == ".." or norm.startswith("../") or norm == "."):
        raise BadSampleError(f"{source}: entry {text!r} is not a path below its dataset folder "
                             f"(absolute, empty or with '..' leading out); fix the entry")
    return norm


def read_id_list(path: Path, guard: SampleGuard) -> list[str]:
    """The ids of a split list file (each a path below the dataset's folders); duplicate ids
    are a bad sample (error, or dropped), an id leading out of the folder is refused."""
    if not path.is_file():
        raise MissingFileError(f"{path}: split list not found")
    ids = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                ids.append(below(line.split()[0], path))
            except BadSampleError as exc:
                guard(exc)
    unique = list(dict.fromkeys(ids))
    if len(unique) != len(ids):
        dups = sorted({i for i in ids if ids.count(i) > 1})
        guard(BadSampleError(f"{path}: duplicate ids {examples(dups)}"))
    return unique


def image_of(folder: Path, stem: str) -> Path:
    """`folder/<stem>.<ext>` for the first image suffix that exists (default `.jpg`)."""
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return folder / f"{stem}.jpg"


def files_by_stem(folder: Path, suffixes: tuple[str, ...], guard: SampleGuard) -> dict[str, Path]:
    """{path below `folder` without suffix: file} for files with one of `suffixes`."""
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() not in suffixes or path.name.startswith("."):
            continue
        stem = path.relative_to(folder).with_suffix("").as_posix()
        try:
            stem.encode("utf-8")
        except UnicodeEncodeError:
            guard(BadSampleError(f"{str(path)!r}: its file name is not UTF-8; rename it"))
            continue
        if stem in found:
            guard(BadSampleError(f"{folder}: two files for one sample: {found[stem].name} and "
                                 f"{path.name}; keep one"))
            continue
        found[stem] = path
    return found


def paired(images_dir: Path, masks_dir: Path, guard: SampleGuard) -> list[Sample]:
    """Images paired with `.png` masks by their stems; a lonely file on either side is a bad
    sample."""
    images = files_by_stem(images_dir, IMAGE_SUFFIXES, guard)
    masks = files_by_stem(masks_dir, (".png",), guard)
    lonely = [str(images[s]) for s in images if s not in masks]
    if lonely:
        guard(BadSampleError(f"{len(lonely)} image(s) without a mask in {masks_dir}: "
                             f"{examples(lonely)}"))
    orphans = [str(masks[s]) for s in masks if s not in images]
    if orphans:
        guard(BadSampleError(f"{len(orphans)} mask(s) without an image in {images_dir}: "
                             f"{examples(orphans)}"))
    return [Sample(s, images[s], masks[s]) for s in images if s in masks]
