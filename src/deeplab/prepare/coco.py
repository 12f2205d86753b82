"""COCO instance annotations -> semantic masks of the target classes (pycocotools).

Rules:
- categories map to classes by name (`classes.coco_class_map`: same names plus the paper's
  VOC synonyms, or `data.coco_map`); every other category is background (or ignored, 255,
  when the class list has no 'background'), and so are unannotated pixels;
- overlapping instances: instances are painted from the largest to the smallest (by
  decoded pixel count, ties by annotation id), so a smaller object lying on a larger
  one keeps its pixels;
- crowd regions (`iscrowd=1`) of mapped categories become 255 (ignored), painted last;
- images with fewer than `min_pixels` pixels of mapped classes are dropped;
- a segmentation is checked before pycocotools decodes it (its C code trusts its input): a
  polygon has an even number of finite coordinates within one image size of the image (one of
  fewer than 3 points is left out: it covers no pixel), an RLE has the image's size and run
  lengths that add up to its pixel count.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np

from ..core.errors import MissingFileError
from ..data.classes import IGNORE
from .samples import BadSampleError, SampleGuard


def _examples(values: list) -> str:
    return ", ".join(map(str, values[:5])) + (f" and {len(values) - 5} more" if len(values) > 5 else "")


def check_coco(data: dict, annotation_file: Path, guard: SampleGuard) -> dict:
    """The instances file without duplicate image/annotation ids, annotations of images that
    are not listed, or annotations of unknown categories; each kind of fault is an error
    naming the ids (or, with `on_bad_sample: skip`, dropped and counted)."""
    try:
        categories = {c["id"] for c in data["categories"]}
        images, image_ids, duplicate_images = [], set(), []
        for img in data["images"]:
            (duplicate_images if img["id"] in image_ids else images).append(img)
            image_ids.add(img["id"])
        annotations, ann_ids = [], set()
        faults: dict[str, list] = {"duplicate annotation ids": [], "annotations of missing images":
                                   [], "annotations of unknown category ids": []}
        for ann in data["annotations"]:
            if ann["id"] in ann_ids:
                faults["duplicate annotation ids"].append(ann["id"])
            elif ann["image_id"] not in image_ids:
                faults["annotations of missing images"].append(f"{ann['id']} (image {ann['image_id']})")
            elif ann["category_id"] not in categories:
                faults["annotations of unknown category ids"].append(
                    f"{ann['id']} (category {ann['category_id']})")
            else:
                annotations.append(ann)
            ann_ids.add(ann["id"])
    except (KeyError, TypeError) as exc:
        raise BadSampleError(f"{annotation_file}: malformed COCO annotations (missing or wrong "
                             f"field {exc})") from None
    if duplicate_images:
        guard(BadSampleError(f"{annotation_file}: duplicate image ids "
                             f"{_examples([i['id'] for i in duplicate_images])}"))
    for what, items in faults.items():
        if items:
            guard(BadSampleError(f"{annotation_file}: {len(items)} {what}: {_examples(items)}"))
    return {**data, "images": images, "annotations": annotations}


def load_coco(annotation_file: Path, guard: SampleGuard | None = None):
    """pycocotools COCO index; a missing or malformed file raises an error naming it."""
    from pycocotools.coco import COCO

    if not annotation_file.is_file():
        raise MissingFileError(f"{annotation_file}: COCO annotation file not found")
    try:
        data = json.loads(annotation_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadSampleError(f"{annotation_file}: not valid JSON ({exc})") from exc
    missing = [k for k in ("images", "annotations", "categories") if k not in data] \
        if isinstance(data, dict) else ["images", "annotations", "categories"]
    if missing:
        raise BadSampleError(f"{annotation_file}: not a COCO instances file (missing {missing})")
    data = check_coco(data, annotation_file, guard or SampleGuard("error"))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            coco.createIndex()
        except (KeyError, TypeError) as exc:
            raise BadSampleError(f"{annotation_file}: malformed COCO annotations ({exc!r})") from exc
    return coco


def category_names(coco) -> dict[int, str]:
    """{category id: name} of a COCO index."""
    return {int(c["id"]): str(c["name"]) for c in coco.dataset["categories"]}


def rle_counts(counts: str | bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' `rleFrString`, in Python,
    so that they can be checked before its C code writes them)."""
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    out: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                raise ValueError("truncated run length")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"byte {data[p]} is not an RLE character")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        if x < 0:
            raise ValueError("a negative run length")
        out.append(x)
    return out


def checked_segmentation(segmentation, h: int, w: int):
    """A COCO segmentation for an image of `w` x `h`, checked before pycocotools decodes it
    (its C code crashes or allocates without bound on NaN or huge coordinates and on RLEs of
    another size): polygons of fewer than 3 points, which enclose no pixel, are left out (COCO
    2017 has some). ValueError saying what is wrong otherwise."""
    if isinstance(segmentation, list):
        for poly in segmentation:
            if not isinstance(poly, list) or len(poly) % 2:
                raise ValueError("a polygon that is not a list of x, y pairs")
            for i, v in enumerate(poly):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"a polygon coordinate that is not a finite number ({v!r})")
                size = w if i % 2 == 0 else h
                if not -size <= v <= 2 * size:
                    raise ValueError(f"a polygon coordinate ({v!r}) more than one image size "
                                     f"outside the {w}x{h} image")
        return [poly for poly in segmentation if len(poly) >= 6]
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise ValueError("an RLE without a [height, width] size")
        if list(size) != [h, w]:
            raise ValueError(f"an RLE of size {size[1]}x{size[0]} for a {w}x{h} image")
        if isinstance(counts, (str, bytes)):
            try:
                runs = rle_counts(counts)
            except (ValueError, UnicodeEncodeError) as exc:
                raise ValueError(f"an unreadable compressed RLE ({exc})") from None
        elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool)
                                              and c >= 0 for c in counts):
            runs = counts
        else:
            raise ValueError("an RLE whose counts are neither a string nor non-negative integers")
        if sum(runs) != h * w:
            raise ValueError(f"an RLE whose runs cover {sum(runs)} pixels, not the image's {h * w}")
        return segmentation
    raise ValueError(f"a segmentation of type {type(segmentation).__name__} (expected polygons "
                     f"or an RLE)")


def semantic_mask(coco, image_info: dict, annotation_file: Path, class_of: dict[int, int],
                  background: int | None) -> np.ndarray:
    """The class-id mask of one COCO image, following the module's rules (`class_of`: COCO
    category id -> class id; `background`: the class of everything else, None = ignore)."""
    h, w = int(image_info["height"]), int(image_info["width"])
    label = np.full((h, w), IGNORE if background is None else background, dtype=np.uint8)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_info["id"], iscrowd=None))
    painted, crowds = [], []
    for ann in anns:
        class_id = class_of.get(ann["category_id"])
        if class_id is None:
            continue
        try:
            segmentation = checked_segmentation(ann.get("segmentation"), h, w)
        except ValueError as exc:
            raise BadSampleError(f"{annotation_file}: annotation {ann.get('id')} of image "
                                 f"{image_info['id']} has {exc}") from None
        if not segmentation:
            continue
        try:
            m = coco.annToMask({**ann, "segmentation": segmentation}).astype(bool)
        except Exception as exc:  # noqa: BLE001 - pycocotools raises assorted types
            raise BadSampleError(f"{annotation_file}: annotation {ann.get('id')} of image "
                                 f"{image_info['id']} has an undecodable segmentation ({exc})") from exc
        if m.shape != (h, w):
            raise BadSampleError(f"{annotation_file}: annotation {ann.get('id')} decodes to "
                                 f"{m.shape[1]}x{m.shape[0]}, image is {w}x{h}")
        (crowds if ann.get("iscrowd", 0) else painted).append((int(m.sum()), ann["id"], class_id, m))
    for _, _, class_id, m in sorted(painted, key=lambda t: (-t[0], t[1])):
        label[m] = class_id
    for *_, m in crowds:
        label[m] = IGNORE
    return label
