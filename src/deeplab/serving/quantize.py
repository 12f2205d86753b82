"""int8 by static post-training quantization: ONNX Runtime's `quantize_static` in the QDQ
format (int8 weights per channel, uint8 activations), its activation ranges calibrated on
crops of training images. The same QDQ file runs on ONNX Runtime and OpenVINO. Only the
convolutions and matrix products are quantized (where int8 pays); the in-graph normalisation
and padding stay fp32 (OpenVINO's CPU plugin cannot run their quantized broadcasts).

The crops are drawn reproducibly from a split list (`data/processed/train.csv`): `count`
images chosen by `seed`, one `size x size` crop each at a seeded position, so the deploy
stage's int8 model is a function of its DVC dependencies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import InputError
from ..core.io import atomic_path, make_dirs
from ..data.images import read_rgb

QUANTIZED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]


def calibration_crops(split_list: Path, count: int, size: int, seed: int) -> list[np.ndarray]:
    """`count` uint8 `1 x s x s x 3` crops (s = `size`, or the image's shorter side)."""
    rows = pd.read_csv(split_list, dtype=str)
    if rows.empty:
        raise InputError(f"{split_list}: no images to calibrate int8 on")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
    crops = []
    for k in sorted(picks.tolist()):
        image = read_rgb(Path(rows.iloc[k]["image"]))
        h, w = image.shape[:2]
        s = min(size, h, w)
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crops.append(np.ascontiguousarray(image[None, y:y + s, x:x + s]))
    return crops


class _Crops:
    """ONNX Runtime's `CalibrationDataReader` protocol over the crops."""

    def __init__(self, crops: list[np.ndarray]) -> None:
        self._items = iter([{"images": c} for c in crops])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_int8(fp32: Path, out: Path, crops: list[np.ndarray]) -> None:
    """Write the int8 QDQ model of `fp32` to `out` atomically, calibrated on `crops`."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    make_dirs(out.parent)
    with atomic_path(out) as tmp:
        quantize_static(str(fp32), str(tmp), _Crops(crops), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, op_types_to_quantize=QUANTIZED_OPS)
        model = onnx.load(str(tmp))
        props = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
        onnx.helper.set_model_props(model, {**props, "precision": "int8",
                                            "calibration_images": str(len(crops))})
        onnx.save(model, str(tmp))
