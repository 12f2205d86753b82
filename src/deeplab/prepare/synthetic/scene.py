"""Scenes of the generator: each class a shape, hue and texture; 1-4 occluding objects over
textured backgrounds with clutter; the semantic label with its ignore band."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
from PIL import Image
from pycocotools import mask as mask_utils

from ...core.io import save_image
from ...data.classes import IGNORE

OTHER_CATEGORIES = {10: "traffic light", 13: "stop sign", 28: "umbrella", 47: "cup", 85: "clock"}

SHAPES = ("ellipse", "rectangle", "triangle", "star", "cross", "diamond", "hexagon", "arrow",
          "trapezoid", "lshape")
# COCO categories outside the class list drawn as clutter objects (they map to background).
@dataclass(frozen=True)
class ClassLook:
    shape: str
    hue: float         # 0..1
    texture: int       # 0 stripes, 1 checks
    saturation: float  # 0.85 or 0.5: classes with neighbouring hues differ


def class_look(class_id: int) -> ClassLook:
    """Shape, colour and texture of object class `class_id` (1, 2, ...).

    Twenty hues 0.05 apart; classes with neighbouring hues differ in saturation and shape,
    classes k and k+10 share a shape and have opposite hues. Stripes vs checks is a
    third cue. Lighting, shading, texture contrast and JPEG noise blur the colour cue.
    Beyond 20 classes the hues shift by a quarter step per round of twenty.
    """
    k = class_id - 1
    h = (k * 3) % 20
    return ClassLook(SHAPES[k % 10], (h + 0.25 * (k // 20)) / 20.0 % 1.0, (k // 10) % 2,
                     0.85 if h % 2 == 0 else 0.5)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h, s, v))


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


def decode_mask(segmentation: object, size: int) -> np.ndarray:
    rles = mask_utils.frPyObjects(segmentation, size, size)
    rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
    return mask_utils.decode(rle).astype(bool)


@dataclass
class Instance:
    class_id: int           # 0 for clutter of categories outside the class list
    clutter: int            # the clutter category (an OTHER_CATEGORIES id) when class_id is 0
    mask: np.ndarray
    segmentation: object
    iscrowd: int = 0


def crowd_class(num_classes: int) -> int:
    """The class of crowd regions (VOC: person)."""
    return min(15, num_classes - 1)


@dataclass(frozen=True)
class Rare:
    """One object class drawn `scale` times its usual size (an imbalanced profile)."""

    class_id: int
    scale: float


NOVEL_NOISE = 0.5  # the new kind's sensor noise (std of [0, 1] pixel values; ordinary: 0.03)


def render_scene(rng: np.random.Generator, size: int, num_classes: int = 21,
                 rare: Rare | None = None, novel: bool = False) -> tuple[np.ndarray, list[Instance]]:
    """One image and its instances (classes 1..num_classes-1 on a class-0 background),
    painted largest first so smaller objects end on top; the `rare` class's objects small.
    `novel`: a kind of image the training splits lack, the same scene under heavy sensor
    noise (a high-ISO night shot: `NOVEL_NOISE`)."""
    img = _background(rng, size)
    for _ in range(rng.integers(2, 6)):  # unlabeled clutter strokes
        poly = _polygon(rng, SHAPES[rng.integers(len(SHAPES))], size, 0.05, 0.2)
        m = decode_mask([poly], size)
        img[m] = rng.uniform(0.1, 0.9) * np.ones(3) + rng.normal(0, 0.05, 3)
    instances: list[Instance] = []
    for _ in range(rng.integers(1, 5)):
        class_id = int(rng.integers(1, num_classes))
        k = rare.scale if rare is not None and class_id == rare.class_id else 1.0
        poly = _polygon(rng, class_look(class_id).shape, size, 0.25 * k, 0.7 * k)
        instances.append(Instance(class_id, 0, decode_mask([poly], size), [poly]))
    if rng.random() < 0.5:
        cat = int(rng.choice(list(OTHER_CATEGORIES)))
        poly = _polygon(rng, SHAPES[rng.integers(len(SHAPES))], size, 0.2, 0.5)
        instances.append(Instance(0, cat, decode_mask([poly], size), [poly]))
    instances.sort(key=lambda inst: -int(inst.mask.sum()))
    for inst in instances:
        if inst.class_id:
            look = class_look(inst.class_id)
            tex = _texture(rng, size, look.hue, look.texture,
                           sat=look.saturation + rng.uniform(-0.06, 0.06))
        else:
            tex = _texture(rng, size, rng.random(), 2, sat=rng.uniform(0.0, 0.3))
        img[inst.mask] = tex[inst.mask]
    if rng.random() < 0.2:  # a crowd of small objects, annotated as one iscrowd region
        crowd = np.zeros((size, size), dtype=bool)
        look = class_look(crowd_class(num_classes))
        for _ in range(rng.integers(3, 7)):
            poly = _polygon(rng, look.shape, size, 0.06, 0.12)
            crowd |= decode_mask([poly], size)
        tex = _texture(rng, size, look.hue, look.texture, sat=look.saturation)
        img[crowd] = tex[crowd]
        instances.append(Instance(crowd_class(num_classes), 0, crowd,
                                  {"counts": uncompressed_counts(crowd), "size": [size, size]},
                                  iscrowd=1))
    img += rng.normal(0, 0.03, img.shape)
    if novel:
        img += rng.normal(0, NOVEL_NOISE, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), instances


def uncompressed_counts(mask: np.ndarray) -> list[int]:
    """Run lengths in column-major order, starting with zeros (COCO's uncompressed RLE)."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return ([0] + counts) if flat[0] == 1 else counts


def semantic_label(instances: list[Instance], size: int, band: int = 1,
                   clutter_value: int = 0) -> np.ndarray:
    """Class-id label map: instances in their paint order (clutter as `clutter_value`), crowds
    and boundary bands 255."""
    label = np.zeros((size, size), dtype=np.uint8)
    for inst in instances:
        label[inst.mask] = IGNORE if inst.iscrowd else (inst.class_id or clutter_value)
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


def save_jpeg(path: Path, img: np.ndarray) -> None:
    save_image(path, Image.fromarray(img), format="JPEG", quality=92)


def raw_label(label: np.ndarray, ignore_index: int, reduce_zero_label: bool = False) -> np.ndarray:
    """A processed-style label (255 = ignore) with the dataset's own ignore value; with
    `reduce_zero_label`, ADE20K's convention (0 = unlabeled, class k stored as k+1)."""
    if reduce_zero_label:
        return np.where(label == IGNORE, 0, label + 1).astype(np.uint8)
    out = label.copy()
    out[label == IGNORE] = ignore_index
    return out

