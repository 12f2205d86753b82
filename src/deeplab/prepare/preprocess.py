"""Raw datasets -> processed split lists, class-id masks, class list and statistics.

Output directory (written atomically: the whole directory appears at the end):
  classes.json                               class names, colours, raw ignore value
  masks/{coco_train,coco_val,train,val}/<id>.png   palette PNGs of class ids (255 = ignore)
  coco_train.csv, coco_val.csv               id,image,mask,image_sig (COCO-derived, pretraining;
                                             header only when there is no COCO data)
  train.csv, val.csv                         id,image,mask,image_sig (the target dataset)
  class_stats.csv                            split,class_id,class,pixels,images
  hard_images.txt                            train ids containing a hard class
  summary.json                               counts, dropped and skipped samples

`image_sig` (a hash of the image's bytes) makes a list change when one of its images does,
so the stages that read the list rerun. `workers` processes convert samples in parallel; the
output is identical for any number of workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..core.errors import ConfigError
from ..core.hashing import file_sha256
from ..core.io import atomic_dir, write_json, write_text
from ..core.schema import PreprocessConfig
from ..data.classes import (
    IGNORE,
    ClassList,
    coco_class_map,
    hard_class_ids,
    write_classes,
)
from ..data.palette import save_label_png
from .coco import category_names, load_coco, semantic_mask
from .layouts import Sample, below, layout, options_of, target_splits
from .samples import (
    BadSampleError,
    LabelRules,
    SampleGuard,
    check_image,
    read_raw_label,
)

log = logging.getLogger(__name__)
LIST_COLUMNS = ["id", "image", "mask", "image_sig"]


def portable(path: Path) -> str:
    """Path relative to the working directory (the repo root in DVC stages) when inside it."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def image_sig(path: Path) -> str:
    """A hash of the image's bytes: the same in every clone, changed by any edit."""
    return file_sha256(path)[:20]


@dataclass(frozen=True)
class Converted:
    """A sample written to the output: what its split list records, and its class histogram."""

    id: str
    image: str
    mask: str          # below the output folder
    hist: np.ndarray
    sig: str


@dataclass(frozen=True)
class Rejected:
    reason: str


DROPPED = "dropped"  # a COCO image with too few labeled pixels


@dataclass(frozen=True)
class Job:
    """What every worker needs for one split (set once per process by the pool initializer)."""

    out: Path                   # the temporary output folder
    classes: ClassList
    rules: LabelRules | None = None
    mask_dir: str = ""          # below `out`
    coco: Any = None            # COCO index, with the fields below
    coco_images: Path | None = None
    annotation_file: Path | None = None
    class_of: dict[int, int] = field(default_factory=dict)
    min_pixels: int = 0
    annotations: dict[Path, tuple[Any, dict[int, int]]] = field(default_factory=dict)


_JOB: Job | None = None


def _start_worker(job: Job) -> None:
    global _JOB
    _JOB = job


def _run(fn: Callable[[Any], Any], items: Sequence, job: Job, workers: int, desc: str) -> Iterator:
    """`fn` over `items` in order, in `workers` processes (here when 1)."""
    with tqdm(total=len(items), desc=desc, unit="img") as bar:
        if workers <= 1 or len(items) < 2:
            _start_worker(job)
            for item in items:
                yield fn(item)
                bar.update()
            return
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_start_worker, initargs=(job,)) as pool:
            for result in pool.map(fn, items, chunksize=8):
                yield result
                bar.update()


def _written(sample_id: str, image: Path, label: np.ndarray) -> Converted:
    job = _JOB
    mask = f"{job.mask_dir}/{sample_id}.png"
    target = (job.out / mask).resolve()
    if not target.is_relative_to((job.out / job.mask_dir).resolve()):  # ids are checked by the
        raise BadSampleError(f"sample {sample_id!r}: its mask would be written outside "  # layouts:
                             f"{job.out / job.mask_dir}; rename it")  # this is the last guard
    save_label_png(job.out / mask, label, job.classes.palette)
    hist = np.bincount(label.ravel(), minlength=256)[:len(job.classes)]
    return Converted(sample_id, str(image), mask, hist, image_sig(image))


def _convert_target(sample: Sample) -> Converted | Rejected:
    """One target sample: image checked, label read and mapped to class ids (or painted from
    its COCO annotations), mask written."""
    try:
        size = check_image(sample.image)
        if sample.kind == "coco":
            coco, class_of = _JOB.annotations[sample.label]
            info = coco.loadImgs(sample.coco_id)[0]
            check_image(sample.image, (int(info["width"]), int(info["height"])))
            label = semantic_mask(coco, info, sample.label, class_of, _JOB.classes.background)
        else:
            raw = read_raw_label(sample.label, sample.kind)
            label = _JOB.rules.convert(raw, sample.label, size)
    except BadSampleError as exc:
        return Rejected(f"{exc} (sample {sample.id})" if sample.id not in str(exc) else str(exc))
    return _written(sample.id, sample.image, label)


def _convert_coco(image_id: int) -> Converted | Rejected | str:
    job = _JOB
    info = job.coco.loadImgs(image_id)[0]
    try:
        image = job.coco_images / below(info["file_name"], f"{job.annotation_file}: image "
                                                           f"{image_id} file_name")
        check_image(image, (int(info["width"]), int(info["height"])))
        label = semantic_mask(job.coco, info, job.annotation_file, job.class_of,
                              job.classes.background)
    except BadSampleError as exc:
        return Rejected(str(exc))
    labeled = (label != IGNORE) & (label != (job.classes.background if job.classes.background
                                             is not None else IGNORE))
    if int(labeled.sum()) < job.min_pixels:
        return DROPPED
    return _written(Path(info["file_name"]).stem, image, label)


@dataclass
class Split:
    """Rows and per-class histograms of one processed split."""

    name: str
    final: Path    # where the output will live (the paths the lists record)
    rows: list[dict[str, str]] = field(default_factory=list)
    hist: list[np.ndarray] = field(default_factory=list)
    dropped: int = 0

    def collect(self, results: Iterator, guard: SampleGuard) -> "Split":
        for result in results:
            if isinstance(result, Rejected):
                guard(BadSampleError(result.reason))
            elif result == DROPPED:
                self.dropped += 1
            else:
                self.rows.append({"id": result.id, "image": portable(Path(result.image)),
                                  "mask": portable(self.final / result.mask), "image_sig": result.sig})
                self.hist.append(result.hist)
        return self

    def write(self, tmp: Path) -> None:
        pd.DataFrame(self.rows, columns=LIST_COLUMNS).to_csv(tmp / f"{self.name}.csv", index=False)


def process_coco(coco_root: Path, split: str, job: Job, coco_map: dict[str, str] | None,
                 guard: SampleGuard, workers: int, final: Path) -> Split:
    """COCO `split` (train|val) -> masks of the target classes."""
    ann_file = coco_root / "annotations" / f"instances_{split}2017.json"
    coco = load_coco(ann_file, guard)
    names = category_names(coco)
    by_name = coco_class_map(job.classes, list(names.values()), coco_map, str(ann_file))
    class_of = {cid: by_name[name] for cid, name in names.items() if name in by_name}
    if not class_of:
        raise ConfigError(f"{ann_file}: no COCO category maps to a class of the dataset "
                          f"(classes: {', '.join(job.classes.names)}); set data.coco_map, or "
                          f"data.coco_root: null for no COCO pretraining")
    job = Job(job.out, job.classes, mask_dir=f"masks/coco_{split}", coco=coco,
              coco_images=coco_root / f"{split}2017", annotation_file=ann_file,
              class_of=class_of, min_pixels=job.min_pixels)
    results = _run(_convert_coco, sorted(coco.getImgIds()), job, workers, f"coco {split}")
    return Split(f"coco_{split}", final).collect(results, guard)


def class_stats(splits: list[Split], classes: ClassList) -> pd.DataFrame:
    """Pixels and images per class and split."""
    rows = []
    for split in splits:
        hist = np.stack(split.hist) if split.hist else np.zeros((0, len(classes)), dtype=np.int64)
        for c, name in enumerate(classes.names):
            rows.append({"split": split.name, "class_id": c, "class": name,
                         "pixels": int(hist[:, c].sum()), "images": int((hist[:, c] > 0).sum())})
    return pd.DataFrame(rows)


def hard_images(split: Split, ids: list[int]) -> list[str]:
    """Ids of the images that contain at least one of the classes `ids`."""
    return [row["id"] for row, h in zip(split.rows, split.hist) if ids and h[ids].any()]


def label_rules(name: str, classes: ClassList) -> LabelRules:
    lookup = layout(name).lookup
    return LabelRules(len(classes), classes.ignore_index, classes.palette,
                      tuple(lookup()) if lookup else None, classes.reduce_zero_label)


def target_annotations(samples: list[Sample], classes: ClassList, coco_map: dict[str, str] | None,
                       guard: SampleGuard) -> dict[Path, tuple[Any, dict[int, int]]]:
    """{annotation file: (its COCO index, category id -> class id)} of a COCO-JSON target:
    categories by name, merged by `data.coco_map`; other categories are background."""
    out = {}
    for ann_file in dict.fromkeys(s.label for s in samples if s.kind == "coco"):
        coco = load_coco(ann_file, guard)
        names = category_names(coco)
        by_name = coco_class_map(classes, list(names.values()), coco_map, str(ann_file), merge=True)
        out[ann_file] = (coco, {cid: by_name[name] for cid, name in names.items() if name in by_name})
    return out


def preprocess(manifest: dict[str, Any], out: Path, cfg: PreprocessConfig) -> dict[str, Any]:
    """Run the whole preprocessing into `out` (atomically); return the summary."""
    classes = ClassList.from_dict(manifest["classes"])
    layout_name = manifest.get("layout", "voc")
    hard_ids = hard_class_ids(classes, cfg.hard_classes)  # a bad name fails before any work
    guard = SampleGuard(cfg.on_bad_sample)
    workers = cfg.workers or os.cpu_count() or 1
    with atomic_dir(out) as tmp:
        base = Job(tmp, classes, min_pixels=cfg.min_pixels)
        coco_splits = []
        for split in ("train", "val"):
            if manifest.get("coco_root"):
                coco_splits.append(process_coco(Path(manifest["coco_root"]), split, base,
                                                manifest.get("coco_map"), guard, workers, out))
            else:
                coco_splits.append(Split(f"coco_{split}", out))
            (tmp / f"masks/coco_{split}").mkdir(parents=True, exist_ok=True)
        target = target_splits(layout_name, Path(manifest["root"]), options_of(manifest), guard)
        rules = label_rules(layout_name, classes)
        annotations = target_annotations(target.train + target.val, classes,
                                         manifest.get("coco_map"), guard)
        train, val = (Split(name, out).collect(_run(
            _convert_target, samples, Job(tmp, classes, rules, f"masks/{name}",
                                          annotations=annotations), workers, name), guard)
            for name, samples in (("train", target.train), ("val", target.val)))
        splits = [*coco_splits, train, val]
        required = [train, val] + (coco_splits if manifest.get("coco_root") else [])
        for split in required:
            if not split.rows:
                raise BadSampleError(f"split {split.name} has no usable samples")
        for split in splits:
            split.write(tmp)
        write_classes(tmp / "classes.json", classes)
        class_stats(splits, classes).to_csv(tmp / "class_stats.csv", index=False)
        hard = hard_images(train, hard_ids)
        write_text(tmp / "hard_images.txt", "".join(f"{i}\n" for i in hard))
        summary = {
            "layout": layout_name, "classes": len(classes),
            "samples": {s.name: len(s.rows) for s in splits},
            "dropped_min_pixels": {s.name: s.dropped for s in coco_splits},
            "skipped_bad_samples": len(guard.skipped), "skipped": guard.skipped[:100],
            "removed_train_in_val": target.removed_train_in_val,
            "hard_images": len(hard),
        }
        write_json(tmp / "summary.json", summary)
    return summary
