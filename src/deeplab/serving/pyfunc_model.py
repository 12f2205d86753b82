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
- `probabilities`: one row per image, `probabilities_npz`: base64 of a compressed NumPy file
  holding `probabilities`, uint8 `C x H x W` (the probability times 255, rounded):
  `np.load(io.BytesIO(base64.b64decode(s)))["probabilities"] / 255`;
- `confidence`: one row per image, `confidence_png` (base64 8-bit grey PNG of the kind
  `params.confidence` names: `maxprob` by default, `margin`, `entropy`; see
  `deeplab.uncertainty.confidence`) and `mask_png`.
Probabilities and confidence are calibrated with the temperature fitted by `evaluate` and
registered with the version (its `serve.json`, under the same sha256 as the rest), computed
in sliding windows above `whole_pixels` and written band by band into the compact answer:
memory follows the window and the uint8 answer, never `C x H x W` floats turned into lists.

It runs on the runtime and precision of `register.serve` (its `serve.json`; torch, or a
deployed ONNX file on ONNX Runtime or OpenVINO, each checked against its registered sha256).
Before any image is decoded, every row's header is read: an image of more than `max_pixels`
pixels (`max_output_pixels` for probabilities and confidence), or a request of more than
`max_request_pixels` in all, is refused. At most `concurrency` requests compute at once in a
worker (the others wait their turn, up to `timeout_s`, then get a 503); a request stops at the
next window once it has computed for `timeout_s` (MLflow's server answers 504 at 60 s and
would otherwise let it run on). A refused request's answer is one line.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import threading
import time

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    TEMPORARILY_UNAVAILABLE,
)
from mlflow.pyfunc import PythonModel

OUTPUTS = ("labels", "png", "probabilities", "confidence")


class RequestError(MlflowException):
    """A bad request, answered with status 400 (503 when `busy`) and its one line as the whole
    message: MLflow's scoring server prefixes an error's message with the request's data,
    which this keeps out (no input echo, no stack trace, no server path)."""

    def __init__(self, line: str, busy: bool = False) -> None:
        self._line = line
        super().__init__(line, error_code=TEMPORARILY_UNAVAILABLE if busy else INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:  # the server's rewrap is dropped
        pass


def _bytes(value, row: int) -> bytes:
    """The PNG/JPEG bytes of a table row (base64, or raw bytes)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise RequestError(f"image {row}: not base64 PNG/JPEG bytes ({exc})") from None


def _header_size(data: bytes, row: int) -> tuple[int, int]:
    """(width, height) of an encoded image, from its header alone."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.width, img.height
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for what is not an image
        raise RequestError(f"image {row}: not a readable image ({type(exc).__name__})") from None


def _limit(pixels: int, what: str, allowed: int, key: str) -> None:
    if pixels > allowed:
        raise RequestError(f"{what} is more than the {allowed:,} pixels allowed ({key})")


def _as_images(model_input, serve, output: str) -> tuple[list[np.ndarray], bool]:
    """The input images, and whether they came as a table (one result row per image). Every
    row's size is judged from its header before any image is decoded."""
    from deeplab.core.errors import InputError
    from deeplab.data.images import read_rgb

    per_image, key = (serve.max_output_pixels, "max_output_pixels") \
        if output in ("probabilities", "confidence") else (serve.max_pixels, "max_pixels")
    if isinstance(model_input, pd.DataFrame):
        if "image" not in model_input.columns:
            raise RequestError(f"a table input needs an 'image' column of base64 PNG/JPEG bytes, "
                               f"got columns {list(model_input.columns)[:10]}")
        encoded = [_bytes(v, k) for k, v in enumerate(model_input["image"])]
        sizes = [_header_size(data, k) for k, data in enumerate(encoded)]
        for k, (w, h) in enumerate(sizes):
            _limit(w * h, f"image {k}: {w}x{h}", per_image, key)
        total = sum(w * h for w, h in sizes)
        _limit(total, f"the request's {len(sizes)} images ({total:,} pixels)",
               serve.max_request_pixels, "max_request_pixels")
        images = []
        for k, data in enumerate(encoded):
            try:
                images.append(read_rgb(io.BytesIO(data), max_pixels=per_image, name=f"image {k}"))
            except InputError as exc:
                raise RequestError(str(exc)) from None
            encoded[k] = b""  # each image's bytes go as soon as it is decoded
        return images, True
    array = np.asarray(model_input)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise RequestError(f"expected uint8 RGB images N x H x W x 3, got shape {array.shape}")
    _limit(array.shape[1] * array.shape[2], f"images of {array.shape[2]}x{array.shape[1]}",
           per_image, key)
    _limit(array.shape[0] * array.shape[1] * array.shape[2],
           f"the request's {array.shape[0]} images", serve.max_request_pixels, "max_request_pixels")
    if not np.issubdtype(array.dtype, np.integer) or array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise RequestError("expected pixel values 0..255 (uint8)")
    return [np.ascontiguousarray(array, dtype=np.uint8)], False


class _Deadline:
    """A runner that refuses to start another window once its request has computed for
    `seconds`: a request the server already answered with a timeout stops soon after."""

    def __init__(self, runner, seconds: float) -> None:
        self.runner, self.end, self.seconds = runner, time.monotonic() + seconds, seconds
        self.classes = runner.classes

    def _check(self) -> None:
        if time.monotonic() > self.end:
            raise RequestError(f"stopped after computing for {self.seconds:g} s (register.serve."
                               f"timeout_s); send a smaller image or use windows (tile)")

    def probs(self, images: np.ndarray) -> np.ndarray:
        self._check()
        return self.runner.probs(images)

    def labels(self, images: np.ndarray) -> np.ndarray:
        self._check()
        return self.runner.labels(images)


def _one_line_param_errors() -> None:
    """MLflow checks `params` against the signature before `predict` runs, and its server puts
    the whole request in front of a refusal (`{"output": 5}` came back as the image's base64 and
    a multi-line message): that check's refusal becomes one line, the request left out."""
    import mlflow.pyfunc as pyfunc

    original = pyfunc._validate_prediction_input
    if getattr(original, "one_line", False):
        return

    def checked(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except MlflowException as exc:
            line = next((x.strip() for x in str(exc.message).splitlines() if x.strip()), "invalid")
            raise RequestError(f"params: {line[:300]}") from None

    checked.one_line = True
    pyfunc._validate_prediction_input = checked


class SegmenterModel(PythonModel):
    """pyfunc wrapper of `deeplab.serving.segmenter.Segmenter`."""

    def load_context(self, context) -> None:
        from pathlib import Path

        from deeplab.core.schema import ServeConfig
        from deeplab.model.files import classes_of, model_from_state
        from deeplab.serving.runtimes import deployed_source, open_first
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
        auto = settings.pop("auto", None)
        self.serve = ServeConfig(**settings)
        self.device = torch.device((context.model_config or {}).get("device", "cpu"))
        self.classes = classes_of(state)
        order = (auto or {}).get("order") or \
            [f"{self.serve.runtime}/{self.serve.precision}"]
        self.runner = open_first(  # auto: the fastest first; where this CPU cannot, the next
            order, deployed_source(files, lambda: Segmenter(model_from_state(state), strategy,
                                                            self.classes).to(self.device).eval()),
            self.serve.threads, self.device)

        self.turns = threading.BoundedSemaphore(self.serve.concurrency)
        _one_line_param_errors()

    def _labels(self, runner, images: np.ndarray) -> np.ndarray:
        from deeplab.serving.windows import segment_image

        serve = self.serve
        if images.shape[1] * images.shape[2] <= serve.whole_pixels and serve.tile is None:
            return runner.labels(images)
        return np.stack([segment_image(runner, image, serve.tile, serve.overlap,
                                       serve.whole_pixels) for image in images])

    def _probabilities(self, runner, image: np.ndarray) -> str:
        """Base64 of a compressed `.npz` holding the calibrated probabilities of one `H x W x 3`
        image as uint8 `C x H x W` (x 255), filled band by band (windows above whole_pixels)."""
        from deeplab.serving.windows import segment_image
        from deeplab.uncertainty.confidence import calibrate

        serve, out = self.serve, None

        def keep(y: int, probs: np.ndarray) -> None:
            nonlocal out
            if out is None:
                out = np.empty((probs.shape[0], *image.shape[:2]), dtype=np.uint8)
            for r in range(0, probs.shape[1], 64):  # 64 rows at a time: small temporaries
                band = np.rint(calibrate(probs[:, r:r + 64], self.temperature) * 255)
                out[:, y + r:y + r + band.shape[1]] = band
        segment_image(runner, image, serve.tile, serve.overlap, serve.whole_pixels, keep)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, probabilities=out)
        del out
        return base64.b64encode(buffer.getbuffer()).decode("ascii")

    def _confidence(self, runner, image: np.ndarray, kind: str) -> dict[str, str]:
        from deeplab.serving.windows import segment_image
        from deeplab.uncertainty.confidence import (
            ConfidenceCollector,
            confidence_image,
            png_info,
        )

        serve = self.serve
        collect = ConfidenceCollector(*image.shape[:2], kind, self.temperature)
        labels = segment_image(runner, image, serve.tile, serve.overlap, serve.whole_pixels, collect)
        buffer = io.BytesIO()
        confidence_image(collect.map).save(buffer, format="PNG",
                                           pnginfo=png_info(kind, self.temperature))
        return {"confidence_png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                "mask_png": self._png(labels)}

    def _png(self, labels: np.ndarray) -> str:
        from deeplab.data.palette import label_image

        buffer = io.BytesIO()
        label_image(labels, self.classes.palette).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _params(self, params) -> tuple[str, str]:
        """`output` and `confidence`, checked here (one line, the request not echoed)."""
        from deeplab.uncertainty.confidence import KINDS

        params = params or {}
        output, kind = params.get("output", "labels"), params.get("confidence", "maxprob")
        if not isinstance(output, str) or output not in OUTPUTS:
            raise RequestError(f"params.output: expected one of {', '.join(OUTPUTS)}")
        if not isinstance(kind, str) or kind not in KINDS:
            raise RequestError(f"params.confidence: expected one of {', '.join(KINDS)}")
        return output, kind

    def predict(self, context, model_input, params=None):  # no type hints: the signature is explicit
        output, kind = self._params(params)
        if not self.turns.acquire(timeout=self.serve.timeout_s):
            raise RequestError(f"busy: {self.serve.concurrency} request(s) computing for longer "
                               f"than {self.serve.timeout_s:g} s (register.serve.concurrency); "
                               f"try again", busy=True)
        try:
            runner = _Deadline(self.runner, self.serve.timeout_s)
            images, table = _as_images(model_input, self.serve, output)
            singles = [image for batch in images for image in (batch if batch.ndim == 4 else batch[None])]
            if output == "probabilities":
                return pd.DataFrame({"probabilities_npz": [self._probabilities(runner, image)
                                                           for image in singles]})
            if output == "confidence":
                return pd.DataFrame([self._confidence(runner, image, kind) for image in singles])
            if not table and output == "labels":
                return self._labels(runner, images[0])
            labels = [self._labels(runner, image[None])[0] for image in singles]
            if output == "png":
                return pd.DataFrame({"mask_png": [self._png(label) for label in labels]})
            return pd.DataFrame({"labels": [label.tolist() for label in labels]})
        finally:
            self.turns.release()


mlflow.models.set_model(SegmenterModel())
