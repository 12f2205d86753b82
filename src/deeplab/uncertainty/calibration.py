"""Temperature scaling fitted on the validation split, and the calibration error it leaves.

The temperature `T` minimises the mean negative log-likelihood of the labelled pixels of a
uniform sample of the split (`softmax(log p / T)`, see `confidence.calibrate`), searched on
`log T` in [log 0.05, log 20]. The expected calibration error (ECE) bins pixels by the
probability of their predicted class into `bins` equal bins and sums |accuracy - confidence|
weighted by each bin's share of pixels; per class, over the pixels predicted as that class.
The sample is split in two halves at random: `T` is fitted on one, NLL and ECE before and
after scaling are reported on the other (held out), so the gain is not measured on the pixels
it was fitted to. A split without labelled pixels gives T = 1 and no figures (null, with the
reason), never NaN.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .confidence import EPS

T_RANGE = (0.05, 20.0)
log = logging.getLogger(__name__)


def nll(logp: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean `-log softmax(logp / T)[label]` of `N x C` log-probabilities."""
    z = logp.astype(np.float64) / temperature
    top = z.max(1, keepdims=True)
    log_norm = np.log(np.exp(z - top).sum(1)) + top[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(logp: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising `nll` (1.0 for an empty sample)."""
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        return 1.0
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    result = minimize_scalar(lambda t: nll(logp, labels, float(np.exp(t))), bounds=(lo, hi),
                             method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def scaled_probs(logp: np.ndarray, temperature: float) -> np.ndarray:
    z = logp / temperature
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin: pixels, mean confidence, accuracy; and the ECE they give."""

    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        total = self.counts.sum()
        if total == 0:
            return float("nan")
        return float((self.counts * np.abs(self.accuracy - self.confidence)).sum() / total)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> Reliability:
    """The reliability table of pixels' predicted-class probabilities and their correctness."""
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    acc_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    safe = np.maximum(counts, 1)
    return Reliability(counts, conf_sum / safe, acc_sum / safe)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    return reliability(confidence, correct, bins).ece


@dataclass
class PixelSample:
    """Log-probabilities and labels of a uniform sample of labelled pixels (each kept with
    probability `rate`), filled image by image through `visitor`."""

    rate: float
    seed: int = 0
    ignore_index: int = 255
    logp: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def visitor(self, label: np.ndarray):
        """The `on_probs(y, probs)` of one image whose `H x W` labels are `label`."""
        def visit(y: int, probs: np.ndarray) -> None:
            rows = label[y:y + probs.shape[1]]
            keep = (rows != self.ignore_index) & (rows < probs.shape[0])
            keep &= self.rng.random(rows.shape) < self.rate
            if keep.any():
                self.logp.append(np.log(np.maximum(probs[:, keep].T, EPS)).astype(np.float32))
                self.labels.append(rows[keep].astype(np.int64))
        return visit

    def arrays(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.labels:
            return np.zeros((0, num_classes), np.float32), np.zeros(0, np.int64)
        return np.concatenate(self.logp), np.concatenate(self.labels)


NO_PIXELS = "no labelled validation pixel: temperature 1.0 (no scaling), nothing to measure"


@dataclass(frozen=True)
class Calibration:
    """What temperature scaling did: `T` fitted on `pixels` validation pixels, NLL and
    reliability before and after on `heldout` other pixels (`reason` when there were none)."""

    temperature: float
    pixels: int
    heldout: int
    nll_before: float | None
    nll_after: float | None
    before: Reliability
    after: Reliability
    per_class: list[dict[str, Any]]   # class, pixels, ece_before, ece_after
    reason: str | None = None

    def metrics(self) -> dict[str, Any]:
        """JSON-ready figures (null, with `calibration_note`, where nothing was measured)."""
        def r(v: float | None) -> float | None:
            return None if v is None or not np.isfinite(v) else round(float(v), 4)

        out = {"temperature": round(self.temperature, 4), "nll": r(self.nll_before),
               "nll_calibrated": r(self.nll_after), "ece": r(self.before.ece),
               "ece_calibrated": r(self.after.ece), "calibration_pixels": self.pixels,
               "calibration_heldout_pixels": self.heldout}
        return out | ({"calibration_note": self.reason} if self.reason else {})


def calibration_of(logp: np.ndarray, labels: np.ndarray, names: Sequence[str],
                   bins: int = 15, seed: int = 0) -> Calibration:
    """Fit the temperature on one random half of `N x C` log-probabilities and measure NLL and
    ECE (overall and per predicted class) before and after on the other half."""
    order = np.random.default_rng(seed).permutation(len(labels))
    fit, held = order[:len(order) // 2], order[len(order) // 2:]
    if len(fit) == 0:
        empty = reliability(np.zeros(0), np.zeros(0, bool), bins)
        return Calibration(1.0, 0, 0, None, None, empty, empty,
                           [{"class": name, "pixels": 0, "ece_before": None, "ece_after": None}
                            for name in names], NO_PIXELS)
    t = fit_temperature(logp[fit], labels[fit])
    logp, labels = logp[held].astype(np.float64), labels[held]
    before, after = np.exp(logp), scaled_probs(logp, t)
    pred = before.argmax(1)  # the same under any temperature
    correct = pred == labels
    conf_b, conf_a = before.max(1), after.max(1)
    per_class = []
    for c, name in enumerate(names):
        mine = pred == c
        per_class.append({"class": name, "pixels": int(mine.sum()),
                          "ece_before": round(ece(conf_b[mine], correct[mine], bins), 4),
                          "ece_after": round(ece(conf_a[mine], correct[mine], bins), 4)})
    return Calibration(t, len(fit), len(held), nll(logp, labels), nll(logp, labels, t),
                       reliability(conf_b, correct, bins), reliability(conf_a, correct, bins),
                       per_class)


def sample_split(runner: Any, rows: Any, num_classes: int, pixels: int, windows: Any = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities and labels of about `pixels` labelled pixels drawn uniformly from the
    images of a split list (`rows`: image, mask), run as evaluation runs them (`windows`)."""
    from PIL import Image

    from ..data.dataset import load_sample
    from ..serving.windows import segment_image

    total = 0
    for path in rows["mask"]:  # sizes from the headers: nothing decoded twice
        with Image.open(path) as img:
            total += img.width * img.height
    sample = PixelSample(min(1.0, pixels / max(total, 1)), seed)
    tile, overlap, whole = (windows.tile, windows.overlap, windows.whole_pixels) if windows \
        else (None, 0.0, 1 << 62)
    for image_path, mask_path in zip(rows["image"], rows["mask"]):
        image, label = load_sample(image_path, mask_path)
        pixels_hw = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        segment_image(runner, pixels_hw, tile, overlap, whole, sample.visitor(label.numpy()))
    return sample.arrays(num_classes)


def calibrate(model: Any, rows: Any, classes: Any, cfg: Any, device: Any) -> Calibration:
    """Temperature scaling of `model` (its training output stride, single scale, windows as
    `cfg` = `params.evaluate` says) on about `cfg.calibration_pixels` validation pixels."""
    from ..model.inference import InferenceStrategy, ModelRunner

    runner = ModelRunner(model, InferenceStrategy(pad_to=cfg.pad_to), device)
    logp, labels = sample_split(runner, rows, len(classes), cfg.calibration_pixels, cfg)
    result = calibration_of(logp, labels, classes.names, cfg.calibration_bins)
    m = result.metrics()
    log.info("calibration: T %.3f fitted on %d pixels; on %d held-out pixels NLL %s -> %s, "
             "ECE %s -> %s%s", result.temperature, result.pixels, result.heldout, m["nll"],
             m["nll_calibrated"], m["ece"], m["ece_calibrated"],
             f" ({result.reason})" if result.reason else "")
    return result
