"""The runtimes a deployed model runs on, and their precisions: one interface, uint8 RGB
`N x H x W x 3` in, class probabilities (`probs`) or labels (`labels`) out.

| runtime | fp32 | bf16 | int8 |
|---|---|---|---|
| torch | eager PyTorch (model file, `models:/` URI, `.pt2`) | autocast + channels_last | - |
| onnxruntime | the exported `.onnx` | - | the statically quantized `.int8.onnx` (QDQ) |
| openvino | the exported `.onnx` | the same file, bf16 inference hint | the `.int8.onnx` |

bf16 needs a CPU with AVX512_BF16 or AMX (or a GPU for torch); elsewhere it is refused in one
line rather than emulated slowly. An ONNX file is checked before a runtime reads it
(`onnx_files.check_onnx`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..core.choices import runtimes as choices
from ..core.choices.runtimes import RUNTIMES
from ..core.errors import ConfigError, DeeplabError, InputError, ModelFileError
from ..data.classes import ClassList
from ..model.device import cpu_bf16
from .onnx_files import check_onnx, read_metadata

log = logging.getLogger(__name__)

INT8_SUFFIX = ".int8.onnx"


def _require_bf16(runtime: str) -> None:
    if not cpu_bf16():
        raise ConfigError(f"--precision bf16: this CPU has neither AVX512_BF16 nor AMX, so "
                          f"{runtime} would emulate bf16 slower than fp32; use fp32 or int8")


class Runner:
    """A loaded model on one runtime: `probs` and `labels` of uint8 `N x H x W x 3` images;
    `temperature` calibrates its probabilities (`uncertainty.confidence.calibrate`)."""

    runtime: str
    precision: str
    classes: ClassList
    temperature: float = 1.0

    def probs(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def labels(self, images: np.ndarray) -> np.ndarray:
        return self.probs(images).argmax(1).astype(np.uint8)

    def __repr__(self) -> str:
        return f"{self.runtime} {self.precision}"


class TorchRunner(Runner):
    runtime = "torch"

    @classmethod
    def open(cls, source: Any, precision: str, threads: int, device: torch.device,
             **overrides: Any) -> "TorchRunner":
        """A model file, `models:/` or `runs:/` URI or `.pt2` program (`overrides`: output
        stride, scales, flip), or a segmenter already built."""
        if not isinstance(source, (str, Path)):
            return cls(source, precision, device)
        spec = str(source)
        if spec.endswith(".onnx") or Path(spec).is_dir():
            raise ConfigError(f"{spec}: an ONNX model runs on --runtime onnxruntime or openvino")
        from .segmenter import load_segmenter

        return cls(load_segmenter(spec, device=device, **overrides), precision, device)

    def __init__(self, segment: Any, precision: str, device: torch.device) -> None:
        if precision == "bf16" and device.type == "cpu":
            _require_bf16("torch")
        self.segment, self.precision, self.device = segment, precision, device
        self.classes = getattr(segment, "classes", None) or ClassList.default(256)
        self.temperature = float(getattr(segment, "temperature", 1.0))
        if precision == "bf16" and hasattr(segment, "net"):
            segment.net.to(memory_format=torch.channels_last)

    def _autocast(self):
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def probs(self, images: np.ndarray) -> np.ndarray:
        if not hasattr(self.segment, "probabilities"):
            raise InputError("an exported .pt2 program gives labels only; tiles need "
                             "probabilities: use the model file or an ONNX export")
        with torch.no_grad(), self._autocast():
            out = self.segment.probabilities(torch.from_numpy(images).to(self.device))
        return out.float().cpu().numpy()

    def labels(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad(), self._autocast():
            out = self.segment(torch.from_numpy(images).to(self.device))
        return out.cpu().numpy()


class _OnnxRunner(Runner):
    """Common part of the ONNX runtimes: the checked file, its classes and outputs."""

    @classmethod
    def open(cls, source: Any, precision: str, threads: int, device: torch.device,
             **overrides: Any) -> "_OnnxRunner":
        """An `.onnx` file or a deploy folder (its file for `precision`)."""
        spec = str(source)
        if any(v is not None for v in overrides.values()):
            raise InputError(f"{spec}: an exported model has a fixed inference strategy; "
                             f"re-export it to change output stride, scales or flip")
        path = Path(spec)
        if not (path.suffix == ".onnx" or path.is_dir()):
            raise ConfigError(f"{spec}: --runtime {cls.runtime} runs an ONNX export; write one "
                              f"with python -m deeplab.serving.export --format onnx")
        return cls(onnx_file(path, precision), precision, threads or (os.cpu_count() or 1))

    def __init__(self, path: Path, precision: str) -> None:
        self.path, self.precision = path, precision
        self.model = check_onnx(path)
        self.classes, self.strategy, self.metadata = read_metadata(self.model, path)
        self.outputs = [o.name for o in self.model.graph.output]

    def _checked(self, labels: np.ndarray) -> np.ndarray:
        """`labels`, refused when one falls outside the metadata's class list."""
        if labels.size and int(labels.max()) >= len(self.classes):
            raise ModelFileError(f"{self.path}: gives label {int(labels.max())}, outside its "
                                 f"{len(self.classes)}-class list; refusing its output")
        return labels

    def _failed(self, what: str, exc: Exception) -> DeeplabError:
        """One line for a runtime's own failure (OpenVINO's `std::bad_alloc` traceback, ONNX
        Runtime's out-of-memory), naming the file."""
        text = str(exc).strip().splitlines()
        line = next((t for t in text if "bad_alloc" in t or "memory" in t.lower()), text[0] if text else "")
        if "bad_alloc" in line or "memory" in line.lower():
            line = "out of memory"
        return ModelFileError(f"{self.path}: {self.runtime} cannot {what} it ({line[:300]})")

    def _need_probs(self) -> None:
        if "probabilities" not in self.outputs:
            raise InputError(f"{self.path}: exported without probabilities (tiles and confidence "
                             f"need them); re-export with --probabilities")


class OnnxRuntimeRunner(_OnnxRunner):
    runtime = "onnxruntime"

    def __init__(self, path: Path, precision: str, threads: int) -> None:
        super().__init__(path, precision)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(self.model.SerializeToString(), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT's own error types
            raise self._failed("load", exc) from None

    def _run(self, name: str, images: np.ndarray) -> np.ndarray:
        try:
            return self.session.run([name], {"images": images})[0]
        except Exception as exc:  # noqa: BLE001 - ORT's own error types
            raise self._failed("run", exc) from None

    def probs(self, images: np.ndarray) -> np.ndarray:
        self._need_probs()
        return self._run("probabilities", images)

    def labels(self, images: np.ndarray) -> np.ndarray:
        return self._checked(self._run("labels", images))


class OpenVinoRunner(_OnnxRunner):
    runtime = "openvino"

    def __init__(self, path: Path, precision: str, threads: int) -> None:
        if precision == "bf16":
            _require_bf16("openvino")
        super().__init__(path, precision)
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                                  "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            model = core.read_model(self.model.SerializeToString(), b"")
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError, bad_alloc, ...
            raise self._failed("compile", exc) from None
        self.names = [o.get_any_name() for o in self.compiled.outputs]

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        try:
            request = self.compiled.create_infer_request()
            result = request.infer({0: images})
        except Exception as exc:  # noqa: BLE001 - OpenVINO's own error types
            raise self._failed("run", exc) from None
        return {name: result[out] for name, out in zip(self.names, self.compiled.outputs)}

    def probs(self, images: np.ndarray) -> np.ndarray:
        self._need_probs()
        return np.asarray(self._run(images)["probabilities"], dtype=np.float32)

    def labels(self, images: np.ndarray) -> np.ndarray:
        return self._checked(np.asarray(self._run(images)["labels"], dtype=np.uint8))


def onnx_file(source: Path, precision: str) -> Path:
    """The ONNX file for `precision`: `source` itself, the `.int8.onnx` beside it for int8,
    or the deploy folder's file for it (`core.choices.runtimes.ONNX_FILES`)."""
    if source.is_dir():
        source = source / choices.ONNX_FILES["fp32"]
    if precision == "int8" and not source.name.endswith(INT8_SUFFIX):
        source = source.with_name(source.name.removesuffix(".onnx") + INT8_SUFFIX)
        if not source.is_file():
            raise InputError(f"{source}: no int8 model (the deploy stage writes it, or "
                             f"python -m deeplab.serving.export --format onnx --precision int8)")
    return source


RUNNERS: dict[str, type[Runner]] = {r.runtime: r for r in (TorchRunner, OnnxRuntimeRunner,
                                                           OpenVinoRunner)}
if tuple(RUNNERS) != tuple(RUNTIMES):
    raise ImportError(f"serving.runtimes.RUNNERS {tuple(RUNNERS)} differ from core.choices.runtimes.RUNTIMES")


def open_first(order: Sequence[str], source: Callable[[str, str], Any], threads: int = 0,
               device: str | torch.device = "cpu") -> Runner:
    """The first format of `order` (`runtime/precision`, the fastest first) that this machine
    opens, each on what `source(runtime, precision)` gives (a segmenter, a model or ONNX
    file); one warning line for each format passed over (a CPU without bf16, say)."""
    for k, fmt in enumerate(order):
        runtime, precision = fmt.split("/")
        try:
            return open_runner(source(runtime, precision), runtime, precision, threads, device)
        except ConfigError as exc:
            if k + 1 == len(order):
                raise
            log.warning("serving %s instead of %s: %s", order[k + 1], fmt, exc)
    raise ConfigError("no runtime to serve on (an empty order)")


def deployed_source(files: Mapping[str, Path], segmenter: Callable[[], Any]
                    ) -> Callable[[str, str], Any]:
    """`open_first`'s source for a registered model: torch runs `segmenter()`, the ONNX
    runtimes the deployed file of their precision in `files`."""
    return lambda runtime, precision: segmenter() if runtime == "torch" \
        else files[choices.ONNX_FILES[precision]]


def open_runner(source: Any, runtime: str = "torch", precision: str = "fp32",
                threads: int = 0, device: str | torch.device = "cpu", **overrides: Any) -> Runner:
    """`source` on `runtime` at `precision`. torch: a model file, URI, `.pt2` or a built
    segmenter (`overrides`: output_stride, scales, flip); the ONNX runtimes: an `.onnx` file
    or a deploy folder."""
    try:
        choices.check_format(runtime, precision)
    except ValueError as exc:
        raise ConfigError(f"--runtime/--precision: {exc}") from None
    device = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    return RUNNERS[runtime].open(source, precision, threads, device, **overrides)
