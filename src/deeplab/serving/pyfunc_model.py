"""The registered model's code (MLflow "models from code"): images in, label maps out.

MLflow stores this file as source next to the model, with the `deeplab` package
(`code_paths`), the weights as a model file that is read with `weights_only=True`, and the
inference strategy as JSON. Loading the registered model runs this code, which is plain text
a user can read in the model's artifacts; no pickled object is loaded, and the weights and
strategy must match the sha256 recorded in the model's metadata at registration.
Pass `model_config={"device": "cuda"}` to `mlflow.pyfunc.load_model` for GPU.

Inputs (`predict(model_input, params={"output": ..., "confidence": ...})`):
- a uint8 array `N x H x W x 3` (or `H x W x 3`; integer lists as `mlflow models serve`
  gives them, values 0..255): label maps `N x H x W` come back;
- a table (pandas DataFrame; `dataframe_split` over REST) with a column `image` of base64
  PNG/JPEG bytes, each of any size: one row per image back, with `labels` (nested lists).
`output`:
- `labels` (the default);
- `png`: each image's `mask_png`, a base64 palette PNG of the class ids in the model's own
  colours;
- `probabilities`: float32 `N x C x H x W` (a table: `probabilities`, nested lists);
- `confidence`: float32 `N x H x W` in [0, 1] of the kind `params.confidence` names (`maxprob`
  by default, `margin`, `entropy`; see `deeplab.uncertainty.confidence`); a table gets
  `confidence_png` (base64 8-bit grey PNG naming its kind) and `labels`.
Probabilities and confidence are calibrated with the temperature fitted by `evaluate` and
registered with the version (its `serve.json`, under the same sha256 as the rest).

It runs on the runtime and precision of `register.serve` (its `serve.json`; torch, or a
deployed ONNX file on ONNX Runtime or OpenVINO, each checked against its registered sha256),
refuses an image of more than `max_pixels` pixels from its header, before decoding, and runs
images above `whole_pixels` in sliding windows. A refused request is a 400 whose message is
one line.
"""

from __future__ import annotations

import base64
import binascii
import io

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

OUTPUTS = ("labels", "png", "probabilities", "confidence")


class RequestError(MlflowException):
    """A bad request, answered with status 400 and its one line as the whole message: MLflow's
    scoring server prefixes an error's message with the request's data, which this keeps
    out (no input echo, no stack trace, no server path)."""

    def __init__(self, line: str) -> None:
        self._line = line
        super().__init__(line, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:  # the server's rewrap is dropped
        pass


def _decode(value, row: int, max_pixels: int) -> np.ndarray:
    """`H x W x 3` uint8 from base64 (or raw) PNG/JPEG bytes; the size is judged from the
    header, before anything is decoded."""
    from deeplab.core.errors import InputError
    from deeplab.data.images import read_rgb

    try:
        data = value if isinstance(value, (bytes, bytearray)) else base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise RequestError(f"image {row}: not base64 PNG/JPEG bytes ({exc})") from None
    try:
        return read_rgb(io.BytesIO(data), max_pixels=max_pixels, name=f"image {row}")
    except InputError as exc:
        raise RequestError(str(exc)) from None


def _as_images(model_input, max_pixels: int) -> tuple[list[np.ndarray], bool]:
    """The input images, and whether they came as a table (one result row per image)."""
    if isinstance(model_input, pd.DataFrame):
        if "image" not in model_input.columns:
            raise RequestError(f"a table input needs an 'image' column of base64 PNG/JPEG bytes, "
                               f"got columns {list(model_input.columns)[:10]}")
        return [_decode(v, k, max_pixels) for k, v in enumerate(model_input["image"])], True
    array = np.asarray(model_input)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise RequestError(f"expected uint8 RGB images N x H x W x 3, got shape {array.shape}")
    if array.shape[1] * array.shape[2] > max_pixels:
        raise RequestError(f"images of {array.shape[2]}x{array.shape[1]} are more than the "
                           f"{max_pixels:,} pixels allowed")
    if not np.issubdtype(array.dtype, np.integer) or array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise RequestError("expected pixel values 0..255 (uint8)")
    return [np.ascontiguousarray(array, dtype=np.uint8)], False


class SegmenterModel(PythonModel):
    """pyfunc wrapper of `deeplab.serving.segmenter.Segmenter`."""

    def load_context(self, context) -> None:
        from pathlib import Path

        from deeplab.core.choices.runtimes import ONNX_FILES
        from deeplab.core.schema import ServeConfig
        from deeplab.model.files import classes_of, model_from_state
        from deeplab.serving.runtimes import open_runner
        from deeplab.serving.segmenter import Segmenter
        from deeplab.tracking.registry import (
            logged_model_dir,
            read_logged_model,
            read_serving,
        )

        # The weights, strategy, serving settings and deployed files are checked against the
        # sha256 digests recorded at registration.
        model_dir = logged_model_dir(Path(context.artifacts["model_file"]))
        state, strategy = read_logged_model(model_dir, str(model_dir))
        settings, files = read_serving(model_dir, str(model_dir))
        self.temperature = float(settings.pop("temperature", 1.0))
        self.serve = ServeConfig(**settings)
        self.device = torch.device((context.model_config or {}).get("device", "cpu"))
        self.classes = classes_of(state)
        runtime, precision = self.serve.runtime, self.serve.precision
        source = Segmenter(model_from_state(state), strategy, self.classes).to(self.device).eval() \
            if runtime == "torch" else files[ONNX_FILES[precision]]
        self.runner = open_runner(source, runtime, precision, self.serve.threads, self.device)

    def _labels(self, images: np.ndarray) -> np.ndarray:
        from deeplab.serving.windows import segment_image

        serve = self.serve
        if images.shape[1] * images.shape[2] <= serve.whole_pixels and serve.tile is None:
            return self.runner.labels(images)
        return np.stack([segment_image(self.runner, image, serve.tile, serve.overlap,
                                       serve.whole_pixels) for image in images])

    def _probabilities(self, image: np.ndarray, on_probs) -> np.ndarray:
        """Labels of one `H x W x 3` image; its class probabilities go to `on_probs` (in bands
        of rows when windowed), which calibrates them."""
        from deeplab.serving.windows import segment_image

        serve = self.serve
        return segment_image(self.runner, image, serve.tile, serve.overlap, serve.whole_pixels,
                             on_probs)

    def _probs(self, image: np.ndarray) -> np.ndarray:
        from deeplab.uncertainty.confidence import calibrate

        out = None

        def keep(y: int, probs: np.ndarray) -> None:
            nonlocal out
            if out is None:
                out = np.empty((probs.shape[0], *image.shape[:2]), dtype=np.float32)
            out[:, y:y + probs.shape[1]] = calibrate(probs, self.temperature)
        self._probabilities(image, keep)
        return out

    def _confidence(self, image: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
        from deeplab.uncertainty.confidence import ConfidenceCollector

        collect = ConfidenceCollector(*image.shape[:2], kind, self.temperature)
        return self._probabilities(image, collect), collect.map

    def _confidence_png(self, conf: np.ndarray, kind: str) -> str:
        from deeplab.uncertainty.confidence import confidence_image, png_info

        buffer = io.BytesIO()
        confidence_image(conf).save(buffer, format="PNG", pnginfo=png_info(kind, self.temperature))
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _png(self, labels: np.ndarray) -> str:
        from deeplab.data.palette import label_image

        buffer = io.BytesIO()
        label_image(labels, self.classes.palette).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def predict(self, context, model_input, params=None):  # no type hints: the signature is explicit
        from deeplab.uncertainty.confidence import KINDS

        output = (params or {}).get("output", "labels")
        if output not in OUTPUTS:
            raise RequestError(f"params.output: expected one of {OUTPUTS}, got {output!r}")
        kind = (params or {}).get("confidence", "maxprob")
        if kind not in KINDS:
            raise RequestError(f"params.confidence: expected one of {KINDS}, got {kind!r}")
        images, table = _as_images(model_input, self.serve.max_pixels)
        if output in ("probabilities", "confidence"):
            return self._uncertain(images, table, output, kind)
        if not table and output == "labels":
            return self._labels(images[0])
        labels = [label for batch in images for label in self._labels(batch if batch.ndim == 4
                                                                       else batch[None])]
        if output == "png":
            return pd.DataFrame({"mask_png": [self._png(label) for label in labels]})
        return pd.DataFrame({"labels": [label.tolist() for label in labels]})

    def _uncertain(self, images: list[np.ndarray], table: bool, output: str, kind: str):
        singles = [image for batch in images for image in (batch if batch.ndim == 4 else batch[None])]
        if output == "probabilities":
            probs = [self._probs(image) for image in singles]
            if table:
                return pd.DataFrame({"probabilities": [p.tolist() for p in probs]})
            return np.stack(probs)
        labels, maps = zip(*(self._confidence(image, kind) for image in singles))
        if table:
            return pd.DataFrame({"confidence_png": [self._confidence_png(m, kind) for m in maps],
                                 "labels": [label.tolist() for label in labels]})
        return np.stack(maps)


mlflow.models.set_model(SegmenterModel())
