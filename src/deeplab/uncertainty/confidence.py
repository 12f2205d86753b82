"""Per-pixel confidence of class probabilities, with an optional temperature.

Three kinds, each in [0, 1] with 1 = most confident:
- `maxprob`: the probability of the predicted class;
- `margin`: the top probability minus the second;
- `entropy`: 1 - H(p) / log(C), the normalised entropy turned round.

A temperature `T` rescales probabilities as `softmax(log p / T)`: for a single-scale strategy
exactly `softmax(logits / T)` (temperature scaling, Guo et al. 2017); for averaged multi-scale
probabilities the same map applied to the average. Labels are unchanged by it.

As a PNG, a confidence map is 8-bit grey (0..255 = 0..1) with its kind and temperature in the
file's text chunks (`confidence`, `temperature`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..core.io import save_image

KINDS = ("maxprob", "margin", "entropy")
EPS = 1e-12


def calibrate(probs: np.ndarray, temperature: float = 1.0, axis: int = 0) -> np.ndarray:
    """`softmax(log(probs) / temperature)` along the class `axis` (float32; `probs` as is
    when the temperature is 1)."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.maximum(probs, EPS, dtype=np.float32)) / np.float32(temperature)
    logits -= logits.max(axis=axis, keepdims=True)
    out = np.exp(logits)
    out /= out.sum(axis=axis, keepdims=True)
    return out


def confidence_map(probs: np.ndarray, kind: str = "maxprob") -> np.ndarray:
    """`H x W` float32 confidence in [0, 1] of `C x H x W` class probabilities."""
    if kind not in KINDS:
        raise ValueError(f"confidence kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    p = np.asarray(probs, dtype=np.float32)
    if kind == "maxprob":
        return p.max(0)
    if kind == "margin":
        top2 = np.partition(p, p.shape[0] - 2, axis=0)[-2:]
        return top2[1] - top2[0]
    entropy = -(p * np.log(np.maximum(p, EPS))).sum(0)
    return np.clip(1.0 - entropy / np.log(p.shape[0]), 0.0, 1.0).astype(np.float32)


def confidence_image(conf: np.ndarray) -> Image.Image:
    """An 8-bit grey image of a [0, 1] confidence map."""
    return Image.fromarray(np.round(np.clip(conf, 0.0, 1.0) * 255).astype(np.uint8), mode="L")


def png_info(kind: str, temperature: float) -> PngInfo:
    info = PngInfo()
    info.add_text("confidence", kind)
    info.add_text("temperature", f"{temperature:g}")
    return info


def save_confidence_png(path: Path, conf: np.ndarray, kind: str, temperature: float = 1.0) -> None:
    """Write a confidence map as an 8-bit grey PNG naming its kind (written whole or not at all)."""
    save_image(path, confidence_image(conf), format="PNG", pnginfo=png_info(kind, temperature))


def read_confidence_png(path: Any) -> tuple[np.ndarray, str]:
    """(float [0, 1] map, kind) of a confidence PNG written by `save_confidence_png`."""
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.float32) / 255.0, img.text.get("confidence", "")


class ConfidenceCollector:
    """An `on_probs(y, probs)` visitor (`serving.windows.segment_image`) that fills the confidence map of
    one `height x width` image, band by band, under a temperature."""

    def __init__(self, height: int, width: int, kind: str, temperature: float = 1.0) -> None:
        if kind not in KINDS:
            raise ValueError(f"confidence kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        self.kind, self.temperature = kind, temperature
        self.map = np.zeros((height, width), dtype=np.float32)

    def __call__(self, y: int, probs: np.ndarray) -> None:
        self.map[y:y + probs.shape[1]] = confidence_map(calibrate(probs, self.temperature), self.kind)
