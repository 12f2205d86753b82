"""The fetch stage: bring the raw datasets and write `manifest.json` with their roots.

What fetch owns, and may replace, is only what it generates: `data/raw/synthetic/` and
`data/raw/manifest.json`. Downloads (archives and their extraction) live in
`data.download.dir` (default `data/downloads/`), which is no stage's output: switching
`data.source` never touches them, nor the user's own directories (`local`).

The manifest records the dataset roots, the layout and class list, and a content signature of
every file under the roots (`signature.tree_signature`: hashes of the bytes, cached by
path/inode/size/mtime in `data/.cache/`). The stage runs on every `dvc repro`
(`always_changed`): when no file's content changed it writes the same manifest, byte for
byte in any clone, and nothing downstream reruns; when a file changed, preprocess and what
follows rerun.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, MissingFileError
from ..core.io import atomic_dir, make_dirs, write_json
from ..core.schema import DataConfig
from ..data.classes import ClassList
from .download import download, safe_extract
from .layouts import LayoutOptions, layout, resolve_classes
from .pool import check_apart, write_pool_list
from .signature import tree_signature
from .synthetic import GENERATOR_VERSION, POOL_DIR, generate, generated_root

log = logging.getLogger(__name__)

# (archive name, official URL, md5, extract into, root inside the extraction)
SOURCES = {
    "voc": ("VOCtrainval_11-May-2012.tar",
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
            "6cd6e144f989b92b3379bac3b3de84fd", "voc", "VOCdevkit/VOC2012"),
    "sbd": ("benchmark.tgz",
            "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
            "82b4d87ceb2ed10f6038a1cba92111cb", "sbd", "benchmark_RELEASE"),
    "coco_train": ("train2017.zip", "http://images.cocodataset.org/zips/train2017.zip",
                   "cced6f7f71b7629ddf16f17bbcfab6b2", "coco", ""),
    "coco_val": ("val2017.zip", "http://images.cocodataset.org/zips/val2017.zip",
                 "442b8da7639aecaf257c1dceb8ba8c80", "coco", ""),
    "coco_ann": ("annotations_trainval2017.zip",
                 "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
                 "f4bbac642086de4f52a3fdda2de5fa2c", "coco", ""),
}


def _check_dir(path: str | None, key: str, required: list[str]) -> str:
    if not path:
        raise MissingFileError(f"data.{key}: required when data.source is 'local'")
    root = Path(path).expanduser()
    missing = [r for r in required if not (root / r).exists()]
    if missing:
        raise MissingFileError(f"data.{key}: {root} lacks {', '.join(missing)}")
    return str(root.resolve())


def _check_root(data: DataConfig) -> str:
    """The target dataset's root: it holds one of its layout's required sets of paths (or the
    files `data.coco_files` names)."""
    if not data.root:
        raise MissingFileError("data.root: required when data.source is 'local'")
    root = Path(data.root).expanduser()
    needed = [tuple(data.coco_files.model_dump().values())] if data.coco_files else \
        layout(data.layout).required
    gaps = [[p for p in paths if not (root / p).exists()] for paths in needed]
    if all(gaps):
        others = [", ".join(paths) for paths, gap in zip(needed, gaps) if gap is not min(gaps, key=len)]
        raise MissingFileError(f"data.root: {root} lacks {', '.join(min(gaps, key=len))}"
                               + (f" (or a {data.layout} dataset as {'; '.join(others)})" if others else ""))
    return str(root.resolve())


def layout_options(data: DataConfig) -> LayoutOptions:
    return LayoutOptions(None, data.coco_files.model_dump() if data.coco_files else {},
                         dict(data.coco_map or {}))


def local_roots(data: DataConfig) -> dict[str, str | None]:
    """Validate the user's own dataset directories (COCO and SBD are optional)."""
    roots: dict[str, str | None] = {"root": _check_root(data), "coco_root": None, "sbd_root": None}
    if data.coco_root:
        roots["coco_root"] = _check_dir(data.coco_root, "coco_root", [
            "annotations/instances_train2017.json", "annotations/instances_val2017.json",
            "train2017", "val2017"])
    if data.sbd_root:
        if data.layout != "voc":
            raise ConfigError(f"data.sbd_root: SBD extends the voc layout only (layout is "
                              f"'{data.layout}'); set it to null")
        roots["sbd_root"] = _check_dir(data.sbd_root, "sbd_root", ["dataset/cls", "dataset/img"])
    return roots


def download_all(data: DataConfig, raw: Path) -> dict[str, str]:
    """Download and extract VOC 2012, SBD and COCO 2017 under `raw` (the downloads folder)."""
    refusal = layout(data.layout).download
    if refusal:
        raise ConfigError(refusal)
    opts = data.download
    archives = raw / "archives"
    for name, (archive, url, md5, into, _) in SOURCES.items():
        if opts.mirror:
            url = opts.mirror.rstrip("/") + "/" + archive
        path = download(url, archives / archive, md5, opts.retries, opts.timeout_s)
        done = raw / f".{name}.extracted"
        if not done.exists():
            dest = raw / into
            part = raw / f".{name}.part"
            safe_extract(path, part)
            make_dirs(dest)
            for child in part.iterdir():  # merge (COCO zips share one directory)
                target = dest / child.name
                if target.exists():
                    raise MissingFileError(f"{target}: already exists from an earlier extraction; "
                                           f"move it away and fetch again")
                child.rename(target)
            part.rmdir()
            done.touch()
    return {"root": str(raw / "voc" / SOURCES["voc"][4]),
            "sbd_root": str(raw / "sbd" / SOURCES["sbd"][4]),
            "coco_root": str(raw / "coco")}


def fetch_synthetic(data: DataConfig, classes: ClassList, out: Path) -> dict[str, str | None]:
    """Generate the synthetic dataset into `out` (replaced atomically) unless it is current.

    What was generated is recorded as the settings, the layout, the class list and the
    generator's version: the generated bytes depend on nothing else.
    """
    cfg = data.synthetic
    stamp = {"settings": cfg.model_dump(exclude_none=True), "layout": data.layout, "classes": classes.as_dict(),
             "generator": GENERATOR_VERSION}
    marker = out / "generated.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == stamp):
        with atomic_dir(out) as tmp:
            generate(tmp, cfg, data.layout, classes)
            write_json(tmp / "generated.json", stamp)
    return {"root": str(out / generated_root(data.layout)),
            "coco_root": str(out / "coco") if cfg.coco_train_images else None,
            "sbd_root": str(out / "SBD") if cfg.sbd_images and data.layout == "voc" else None}


def pool_root(data: DataConfig, raw: Path) -> str | None:
    """The unlabeled pool: `data.unlabeled_root`, else the generated one (synthetic source
    with `pool_images`), else none."""
    if data.unlabeled_root:
        check_apart(data.unlabeled_root, "data.unlabeled_root")
        return data.unlabeled_root
    if data.source == "synthetic" and data.synthetic.pool_images:
        return str(raw / "synthetic" / POOL_DIR)
    return None


def fetch(data: DataConfig, raw: Path, pool: Path | None = None) -> dict[str, Any]:
    """Run the fetch stage for `data.source`; return the manifest written to `raw/manifest.json`.

    The manifest holds the dataset roots, the layout, the class list, the COCO name map and a
    signature of every file under the roots: what preprocess reads. With `pool`, the list of
    the unlabeled pool's images goes there (`prepare.pool`), apart from the manifest: a new
    unlabeled image changes what rank reads, not what preprocess does.
    """
    source = data.source
    options = layout_options(data)

    def classes_of(root: str | None) -> ClassList:
        return resolve_classes(data.layout, data.classes,
                               [tuple(c) for c in data.palette] if data.palette else None,
                               data.ignore_index, Path(root) if root else None, options,
                               data.reduce_zero_label)

    if source == "synthetic":
        classes = classes_of(None)
        roots = fetch_synthetic(data, classes, raw / "synthetic")
    else:
        roots = local_roots(data) if source == "local" else download_all(data, Path(data.download.dir))
        classes = classes_of(roots["root"])
    signature = tree_signature(list(roots.values()), raw.parent / ".cache" / "signatures.json")
    manifest = {"source": source, "layout": data.layout, **roots, "classes": classes.as_dict(),
                "coco_map": data.coco_map, "signature": signature}
    if data.coco_files is not None:
        manifest["coco_files"] = options.coco_files
    path = raw / "manifest.json"
    if not (path.is_file() and json.loads(path.read_text()) == manifest):
        write_json(path, manifest)
    if pool is not None:
        count = write_pool_list(pool_root(data, raw), pool, raw.parent / ".cache" / "pool.json")
        log.info("unlabeled pool: %d images listed in %s", count, pool)
    return manifest
