"""A synthetic dataset written in the real COCO 2017 and PASCAL VOC 2012 (+SBD) formats.

Each of the 20 VOC classes has its own shape, hue and texture; two classes share each
shape, and neighbouring hues belong to classes of other shapes, so no single cue
identifies a class reliably. Images hold 1-4 objects at
varied scale and rotation that occlude each other, over textured backgrounds with clutter
and objects of non-VOC COCO categories. Deterministic for a given seed.

COCO output: `coco/{train2017,val2017}/*.jpg` and `coco/annotations/instances_*.json` with
polygons, compressed RLE and `iscrowd` regions (uncompressed RLE), COCO category ids.
VOC output: `VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}` with palette
PNGs that carry a 255 band along object boundaries; SBD output: `SBD/dataset/{img,cls}`
with `.mat` ground truth and `train.txt`/`val.txt`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import scipy.ndimage as ndi
from PIL import Image
from pycocotools import mask as mask_utils

from ..config import VOC_CLASSES, SyntheticData
from .coco import COCO_IDS_OF_VOC
from .palette import IGNORE, save_label_png

SHAPES = ("ellipse", "rectangle", "triangle", "star", "cross", "diamond", "hexagon", "arrow",
          "trapezoid", "lshape")
# Non-VOC COCO categories drawn as clutter objects (they map to background).
OTHER_CATEGORIES = {10: "traffic light", 13: "stop sign", 28: "umbrella", 47: "cup", 85: "clock"}


@dataclass(frozen=True)
class ClassLook:
    shape: str
    hue: float         # 0..1
    texture: int       # 0 stripes, 1 checks
    saturation: float  # 0.85 or 0.5: classes with neighbouring hues differ


def class_look(voc_id: int) -> ClassLook:
    """Shape, colour and texture of a VOC class (1..20).

    Twenty hues 0.05 apart; classes with neighbouring hues differ in saturation and shape,
    classes k and k+10 share a shape and have opposite hues. Stripes vs checks is a
    third cue. Lighting, shading, texture contrast and JPEG noise blur the colour cue.
    """
    k = voc_id - 1
    h = (k * 3) % 20
    return ClassLook(SHAPES[k % 10], h / 20.0, k // 10, 0.85 if h % 2 == 0 else 0.5)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _outline(shape: str) -> np.ndarray:
    """Unit-size outline of a shape, centred at 0, as an `N x 2` array."""
    if shape == "ellipse":
        a = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        return np.stack([np.cos(a), 0.6 * np.sin(a)], 1)
    if shape == "star":
        a = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "hexagon":
        a = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        return np.stack([np.cos(a), np.sin(a)], 1)
    pts = {
        "rectangle": [(-1, -0.55), (1, -0.55), (1, 0.55), (-1, 0.55)],
        "triangle": [(0, -1), (1, 0.8), (-1, 0.8)],
        "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
                  (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
        "diamond": [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)],
        "arrow": [(-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)],
        "trapezoid": [(-0.5, -0.6), (0.5, -0.6), (1, 0.6), (-1, 0.6)],
        "lshape": [(-0.8, -1), (-0.2, -1), (-0.2, 0.4), (0.8, 0.4), (0.8, 1), (-0.8, 1)],
    }[shape]
    return np.array(pts, dtype=float)


def _polygon(rng: np.random.Generator, shape: str, size: int, lo: float, hi: float) -> list[float]:
    """A randomly scaled, rotated and placed polygon, as COCO's flat [x1, y1, x2, y2, ...]."""
    pts = _outline(shape) * rng.uniform(lo, hi) * size / 2
    pts[:, 0] *= rng.uniform(0.8, 1.25)
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = pts @ rot.T + rng.uniform(0.15 * size, 0.85 * size, size=2)
    pts = np.clip(pts, 0, size - 1)
    return [round(float(v), 2) for v in pts.flatten()]


def _texture(rng: np.random.Generator, size: int, hue: float, texture: int, sat: float) -> np.ndarray:
    """`size x size x 3` float image of a colour with a texture (0 stripes, 1 checks, 2 noise)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    a = rng.uniform(0, np.pi)
    period = rng.uniform(4, 8)
    u = xx * np.cos(a) + yy * np.sin(a)
    v = -xx * np.sin(a) + yy * np.cos(a)
    if texture == 0:
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    elif texture == 1:
        pattern = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(float)
    else:
        pattern = ndi.gaussian_filter(rng.random((size, size)), 2)
        pattern = (pattern - pattern.min()) / (np.ptp(pattern) + 1e-6)
    base = _hsv_to_rgb((hue + rng.normal(0, 0.006)) % 1.0, sat, rng.uniform(0.7, 0.95))
    dark = base * rng.uniform(0.35, 0.55)
    shade = 1 + 0.25 * (xx / size - 0.5) * rng.uniform(-1, 1)
    return (dark + (base - dark) * pattern[..., None]) * shade[..., None]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(float) / size
    c0, c1 = rng.uniform(0.2, 0.8, size=(2, 3)) * rng.uniform(0.5, 1.0)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) % 1.0
    img = c0 + (c1 - c0) * t[..., None]
    noise = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 3)
    return img + 0.08 * noise[..., None] / (noise.std() + 1e-6)


def _decode(segmentation: object, size: int) -> np.ndarray:
    rles = mask_utils.frPyObjects(segmentation, size, size)
    rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
    return mask_utils.decode(rle).astype(bool)


@dataclass
class Instance:
    category_id: int        # COCO id
    voc_id: int             # 0 for non-VOC categories
    mask: np.ndarray
    segmentation: object
    iscrowd: int = 0


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[Instance]]:
    """One image and its instances, painted largest first so smaller objects end on top."""
    img = _background(rng, size)
    for _ in range(rng.integers(2, 6)):  # unlabeled clutter strokes
        poly = _polygon(rng, SHAPES[rng.integers(len(SHAPES))], size, 0.05, 0.2)
        m = _decode([poly], size)
        img[m] = rng.uniform(0.1, 0.9) * np.ones(3) + rng.normal(0, 0.05, 3)
    instances: list[Instance] = []
    for _ in range(rng.integers(1, 5)):
        voc_id = int(rng.integers(1, 21))
        poly = _polygon(rng, class_look(voc_id).shape, size, 0.25, 0.7)
        instances.append(Instance(COCO_IDS_OF_VOC[voc_id - 1], voc_id, _decode([poly], size), [poly]))
    if rng.random() < 0.5:
        cat = int(rng.choice(list(OTHER_CATEGORIES)))
        poly = _polygon(rng, SHAPES[rng.integers(len(SHAPES))], size, 0.2, 0.5)
        instances.append(Instance(cat, 0, _decode([poly], size), [poly]))
    instances.sort(key=lambda inst: -int(inst.mask.sum()))
    for inst in instances:
        if inst.voc_id:
            look = class_look(inst.voc_id)
            tex = _texture(rng, size, look.hue, look.texture,
                           sat=look.saturation + rng.uniform(-0.06, 0.06))
        else:
            tex = _texture(rng, size, rng.random(), 2, sat=rng.uniform(0.0, 0.3))
        img[inst.mask] = tex[inst.mask]
    if rng.random() < 0.2:  # a crowd of small people, annotated as one iscrowd region
        crowd = np.zeros((size, size), dtype=bool)
        for _ in range(rng.integers(3, 7)):
            poly = _polygon(rng, class_look(15).shape, size, 0.06, 0.12)
            crowd |= _decode([poly], size)
        look = class_look(15)
        tex = _texture(rng, size, look.hue, look.texture, sat=look.saturation)
        img[crowd] = tex[crowd]
        instances.append(Instance(COCO_IDS_OF_VOC[14], 15, crowd,
                                  {"counts": _uncompressed_counts(crowd), "size": [size, size]},
                                  iscrowd=1))
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), instances


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """Run lengths in column-major order, starting with zeros (COCO's uncompressed RLE)."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return ([0] + counts) if flat[0] == 1 else counts


def semantic_label(instances: list[Instance], size: int, band: int = 1) -> np.ndarray:
    """VOC-style label map: instances in their paint order, crowds and boundary bands 255."""
    label = np.zeros((size, size), dtype=np.uint8)
    for inst in instances:
        label[inst.mask] = IGNORE if inst.iscrowd else inst.voc_id
    if band:
        edges = np.zeros_like(label, dtype=bool)
        for axis in (0, 1):
            diff = np.diff(label.astype(np.int16), axis=axis) != 0
            pad = [(0, 0), (0, 0)]
            pad[axis] = (0, 1)
            edges |= np.pad(diff, pad)
            pad[axis] = (1, 0)
            edges |= np.pad(diff, pad)
        edges = ndi.binary_dilation(edges, iterations=band - 1) if band > 1 else edges
        label[edges] = IGNORE
    return label


def _save_jpeg(path: Path, img: np.ndarray) -> None:
    Image.fromarray(img).save(path, format="JPEG", quality=92)


def write_coco(root: Path, split: str, count: int, size: int, rng: np.random.Generator,
               first_id: int) -> None:
    """`root/{split}2017/*.jpg` + `root/annotations/instances_{split}2017.json`."""
    img_dir = root / f"{split}2017"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = first_id * 100
    for k in range(count):
        image_id = first_id + k
        name = f"{image_id:012d}.jpg"
        img, instances = render_scene(rng, size)
        _save_jpeg(img_dir / name, img)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for inst in instances:
            ann_id += 1
            rle = mask_utils.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
            seg = inst.segmentation
            if not inst.iscrowd and rng.random() < 0.1:  # some instances as compressed RLE
                seg = {"counts": rle["counts"].decode("ascii"), "size": list(rle["size"])}
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": inst.category_id,
                "segmentation": seg, "area": float(mask_utils.area(rle)),
                "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                "iscrowd": inst.iscrowd})
    categories = [{"id": cid, "name": VOC_CLASSES[i + 1], "supercategory": "voc"}
                  for i, cid in enumerate(COCO_IDS_OF_VOC)]
    categories += [{"id": cid, "name": n, "supercategory": "other"} for cid, n in OTHER_CATEGORIES.items()]
    data = {"info": {"description": "deeplab synthetic COCO", "version": "1.0"}, "licenses": [],
            "images": images, "annotations": annotations,
            "categories": sorted(categories, key=lambda c: c["id"])}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))


def write_voc(root: Path, counts: dict[str, int], size: int, rng: np.random.Generator) -> None:
    """`root/VOC2012` with JPEGs, palette PNG masks and split lists."""
    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {}
    for split, count in counts.items():
        ids = [f"2012_{split[0]}{k:05d}" for k in range(count)]
        for name in ids:
            img, instances = render_scene(rng, size)
            _save_jpeg(voc / "JPEGImages" / f"{name}.jpg", img)
            save_label_png(voc / "SegmentationClass" / f"{name}.png", semantic_label(instances, size))
        lists[split] = ids
    lists["trainval"] = lists["train"] + lists["val"]
    for split, ids in lists.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def write_sbd(root: Path, count: int, size: int, rng: np.random.Generator) -> None:
    """`root/SBD/dataset/{img,cls}` with SBD's `.mat` ground truth (GTcls.Segmentation)."""
    ds = root / "SBD" / "dataset"
    (ds / "img").mkdir(parents=True, exist_ok=True)
    (ds / "cls").mkdir(parents=True, exist_ok=True)
    ids = [f"2011_s{k:05d}" for k in range(count)]
    for name in ids:
        img, instances = render_scene(rng, size)
        _save_jpeg(ds / "img" / f"{name}.jpg", img)
        seg = semantic_label(instances, size, band=0)  # SBD has no boundary band
        seg[seg == IGNORE] = 0
        present = np.unique(seg[seg > 0]).astype(np.uint8).reshape(-1, 1)
        boundaries = np.empty((20, 1), dtype=object)
        for c in range(20):
            boundaries[c, 0] = np.zeros((0, 0), dtype=np.uint8)
        gt = {"Segmentation": seg, "Boundaries": boundaries, "CategoriesPresent": present}
        scipy.io.savemat(ds / "cls" / f"{name}.mat", {"GTcls": gt})
    half = len(ids) * 4 // 5
    (ds / "train.txt").write_text("\n".join(ids[:half]) + "\n")
    (ds / "val.txt").write_text("\n".join(ids[half:]) + "\n")


def generate(root: Path, cfg: SyntheticData) -> None:
    """Write the whole synthetic dataset described by `params.data.synthetic` under `root`."""
    seed, size = cfg.seed, cfg.image_size
    streams = np.random.SeedSequence(seed).spawn(5)
    coco = root / "coco"
    write_coco(coco, "train", cfg.coco_train_images, size, np.random.default_rng(streams[0]), 1)
    write_coco(coco, "val", cfg.coco_val_images, size, np.random.default_rng(streams[1]), 900_000)
    write_voc(root, {"train": cfg.voc_train_images, "val": cfg.voc_val_images}, size,
              np.random.default_rng(streams[2]))
    if cfg.sbd_images:
        write_sbd(root, cfg.sbd_images, size, np.random.default_rng(streams[3]))
