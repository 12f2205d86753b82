"""The fetch stage: bring the raw datasets and write `manifest.json` with their roots."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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
        raise ValueError(f"data.{key}: required when data.source is 'local'")
    root = Path(path).expanduser()
    missing = [r for r in required if not (root / r).exists()]
    if missing:
        raise FileNotFoundError(f"data.{key}: {root} lacks {', '.join(missing)}")
    return str(root.resolve())


def local_roots(data: dict[str, Any]) -> dict[str, str | None]:
    """Validate the user's own dataset directories."""
    roots = {
        "voc_root": _check_dir(data["voc_root"], "voc_root",
                               ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"]),
        "coco_root": _check_dir(data["coco_root"], "coco_root",
                                ["annotations/instances_train2017.json",
                                 "annotations/instances_val2017.json", "train2017", "val2017"]),
        "sbd_root": None,
    }
    if data["sbd_root"]:
        roots["sbd_root"] = _check_dir(data["sbd_root"], "sbd_root", ["dataset/cls", "dataset/img"])
    return roots


def download_all(data: dict[str, Any], raw: Path) -> dict[str, str]:
    """Download and extract VOC 2012, SBD and COCO 2017 under `raw`."""
    opts = data["download"]
    archives = raw / "archives"
    for name, (archive, url, md5, into, _) in SOURCES.items():
        if opts["mirror"]:
            url = opts["mirror"].rstrip("/") + "/" + archive
        path = download(url, archives / archive, md5, opts["retries"], opts["timeout_s"])
        done = raw / f".{name}.extracted"
        if not done.exists():
            dest = raw / into
            part = raw / f".{name}.part"
            safe_extract(path, part)
            dest.mkdir(parents=True, exist_ok=True)
            for child in part.iterdir():  # merge (COCO zips share one directory)
                target = dest / child.name
                if target.exists():
                    raise FileExistsError(f"{target}: already exists; remove {raw} and fetch again")
                child.rename(target)
            part.rmdir()
            done.touch()
    return {"voc_root": str(raw / "voc" / SOURCES["voc"][4]),
            "sbd_root": str(raw / "sbd" / SOURCES["sbd"][4]),
            "coco_root": str(raw / "coco")}


def fetch(data: dict[str, Any], raw: Path) -> dict[str, Any]:
    """Run the fetch stage for `data.source`; return the manifest written to `raw/manifest.json`."""
    source = data["source"]
    if source == "synthetic":
        with atomic_dir(raw) as tmp:
            generate(tmp, data["synthetic"])
            roots = {"voc_root": str(raw / "VOC2012"), "coco_root": str(raw / "coco"),
                     "sbd_root": str(raw / "SBD") if data["synthetic"]["sbd_images"] else None}
            write_json(tmp / "manifest.json", {"source": source, **roots})
    else:
        roots = local_roots(data) if source == "local" else download_all(data, raw)
        raw.mkdir(parents=True, exist_ok=True)
        write_json(raw / "manifest.json", {"source": source, **roots})
    return {"source": source, **roots}
