"""The fetch stage: bring the raw datasets and write `manifest.json` with their roots.

What fetch owns, and may replace, is only what it generates: `data/raw/synthetic/` and
`data/raw/manifest.json`. Downloads (archives and their extraction) live in
`data.download.dir` (default `data/downloads/`), which is no stage's output: switching
`data.source` never touches them, nor the user's own directories (`local`).

The manifest records the dataset roots and a signature (path, size, modification time) of
every file under them. The stage runs on every `dvc repro` (`always_changed`): when nothing
changed it writes the same manifest and nothing downstream reruns; when a file under a
root changed, preprocess and what follows rerun.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..config import DataConfig, SyntheticData
from ..errors import MissingFileError
from ..io import atomic_dir, write_json
from .download import download, safe_extract
from .synthetic import generate

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


def tree_signature(roots: list[str | None]) -> str:
    """sha256 over (path, size, mtime) of every file under `roots` (one `stat` per file)."""
    h = hashlib.sha256()
    for root in sorted(r for r in roots if r):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                st = os.stat(path)
                h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def local_roots(data: DataConfig) -> dict[str, str | None]:
    """Validate the user's own dataset directories."""
    roots = {
        "voc_root": _check_dir(data.voc_root, "voc_root",
                               ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"]),
        "coco_root": _check_dir(data.coco_root, "coco_root",
                                ["annotations/instances_train2017.json",
                                 "annotations/instances_val2017.json", "train2017", "val2017"]),
        "sbd_root": None,
    }
    if data.sbd_root:
        roots["sbd_root"] = _check_dir(data.sbd_root, "sbd_root", ["dataset/cls", "dataset/img"])
    return roots


def download_all(data: DataConfig, raw: Path) -> dict[str, str]:
    """Download and extract VOC 2012, SBD and COCO 2017 under `raw` (the downloads folder)."""
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
            dest.mkdir(parents=True, exist_ok=True)
            for child in part.iterdir():  # merge (COCO zips share one directory)
                target = dest / child.name
                if target.exists():
                    raise MissingFileError(f"{target}: already exists from an earlier extraction; "
                                           f"move it away and fetch again")
                child.rename(target)
            part.rmdir()
            done.touch()
    return {"voc_root": str(raw / "voc" / SOURCES["voc"][4]),
            "sbd_root": str(raw / "sbd" / SOURCES["sbd"][4]),
            "coco_root": str(raw / "coco")}


def _generator_version() -> str:
    """Hash of the generator's source: a changed generator regenerates the data."""
    from . import synthetic

    return hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:16]


def fetch_synthetic(cfg: SyntheticData, out: Path) -> dict[str, str | None]:
    """Generate the synthetic dataset into `out` (replaced atomically) unless it is current."""
    stamp = {"settings": cfg.model_dump(), "generator": _generator_version()}
    marker = out / "generated.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == stamp):
        with atomic_dir(out) as tmp:
            generate(tmp, cfg)
            write_json(tmp / "generated.json", stamp)
    return {"voc_root": str(out / "VOC2012"), "coco_root": str(out / "coco"),
            "sbd_root": str(out / "SBD") if cfg.sbd_images else None}


def fetch(data: DataConfig, raw: Path) -> dict[str, Any]:
    """Run the fetch stage for `data.source`; return the manifest written to `raw/manifest.json`."""
    source = data.source
    if source == "synthetic":
        roots = fetch_synthetic(data.synthetic, raw / "synthetic")
    elif source == "local":
        roots = local_roots(data)
    else:
        roots = download_all(data, Path(data.download.dir))
    manifest = {"source": source, **roots, "signature": tree_signature(list(roots.values()))}
    path = raw / "manifest.json"
    if not (path.is_file() and json.loads(path.read_text()) == manifest):
        write_json(path, manifest)
    return manifest
