"""ONNX files of the deployable model: written by `torch.onnx.export` (the dynamo exporter),
checked before any runtime reads them.

The graph takes uint8 RGB images `N x H x W x 3` (N, H and W dynamic), normalises them inside,
and gives `labels` (uint8 `N x H x W`) and, when exported with probabilities,
`probabilities` (float32 `N x C x H x W`). Its metadata carries the class names, palette and
ignore index, the inference strategy, the precision and the sha256 of the source model.

An ONNX file holds no code, but it can name external data files by path and operators of
custom domains (which a runtime would look up in a library). Before loading, the file is read
without its external data: every external location must stay inside the model's folder, every
operator domain must be one a plain export or a static quantization writes, and
`onnx.checker` must accept it.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

from ..core.errors import MissingFileError, ModelFileError, UnsafeFileError
from ..core.io import write_bytes
from ..data.classes import ClassList

# The default ONNX domain, and what static QDQ quantization writes (com.microsoft: ORT's
# contrib quantization operators for types the default domain lacks).
ALLOWED_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
MAX_SIDE = 8192  # pixels; the exported graph's height and width bounds


class ProbabilitiesAndLabels(nn.Module):
    """A `Segmenter` with both outputs: labels and the strategy's class probabilities."""

    def __init__(self, seg: nn.Module) -> None:
        super().__init__()
        self.seg = seg

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.seg.probabilities(images)
        return probs.argmax(1).to(torch.uint8), probs


def metadata(seg: nn.Module, source_sha256: str | None, precision: str = "fp32") -> dict[str, str]:
    """The metadata a deployed file carries (strings, as ONNX stores them)."""
    return {"classes": json.dumps(seg.classes.as_dict()),
            "strategy": json.dumps(seg.strategy.as_dict()),
            "source_sha256": source_sha256 or "", "precision": precision,
            "producer": "deeplab"}


def export_onnx(seg: nn.Module, path: Path, probabilities: bool = False,
                source_sha256: str | None = None, example_size: int = 97) -> None:
    """Export `seg` (uint8 NHWC -> labels [, probabilities]) with dynamic N, H, W, atomically."""
    import onnx
    from torch.export import Dim

    if seg.strategy.multi_scale:
        from ..core.errors import InputError

        raise InputError(f"export supports single-scale inference (scales [1.0]), got "
                         f"{list(seg.strategy.scales)}; use `python -m deeplab.serving.predict` "
                         f"for multi-scale")
    module = ProbabilitiesAndLabels(seg).eval() if probabilities else seg.eval()
    example = torch.randint(0, 256, (2, example_size, example_size, 3), dtype=torch.uint8)
    dims = {0: Dim("batch", min=1, max=1024), 1: Dim("height", min=33, max=MAX_SIDE),
            2: Dim("width", min=33, max=MAX_SIDE)}
    outputs = ["labels", "probabilities"] if probabilities else ["labels"]
    program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=(dims,),
                                input_names=["images"], output_names=outputs, verbose=False)
    model = program.model_proto
    onnx.helper.set_model_props(model, metadata(seg, source_sha256))
    onnx.checker.check_model(model)
    write_bytes(path, model.SerializeToString())


def check_onnx(path: str | Path) -> Any:
    """The checked `ModelProto` (weights not loaded); UnsafeFileError or ModelFileError
    naming the file otherwise."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: ONNX model not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several kinds for a corrupt file
        raise ModelFileError(f"{path}: not a readable ONNX model ({exc})") from None
    folder = path.parent.resolve()
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key != "location":
                continue
            where = PurePosixPath(entry.value)
            target = (folder / entry.value).resolve()
            if where.is_absolute() or ".." in where.parts or not target.is_relative_to(folder):
                raise UnsafeFileError(f"{path}: refused: tensor {tensor.name!r} names external data "
                                      f"{entry.value!r} outside the model's folder")
    # An operator of another domain is allowed only when the file defines it as a function
    # itself (the dynamo exporter writes some); any other would be looked up in a library.
    defined = {(f.domain, f.name) for f in model.functions}
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    odd = sorted({f"{n.domain}.{n.op_type}" for n in nodes
                  if n.domain not in ALLOWED_DOMAINS and (n.domain, n.op_type) not in defined})
    odd += sorted({op.domain for op in model.opset_import} - ALLOWED_DOMAINS
                  - {domain for domain, _ in defined})
    if odd:
        raise UnsafeFileError(f"{path}: refused: operator(s) {', '.join(odd)}, which a plain export "
                              f"does not write and the file does not define (a custom operator "
                              f"library would run)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx's ValidationError and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a valid ONNX model ({first})") from None
    return model


def output_channels(model: Any) -> int | None:
    """The class count of a model's `probabilities` output (`N x C x H x W`), when static."""
    for out in model.graph.output:
        if out.name == "probabilities":
            dims = out.type.tensor_type.shape.dim
            return dims[1].dim_value if len(dims) == 4 and dims[1].HasField("dim_value") else None
    return None


def read_metadata(model: Any, path: Path) -> tuple[ClassList, dict[str, Any], dict[str, str]]:
    """The class list, strategy and raw metadata of a checked ONNX model; ModelFileError when
    the class list disagrees with the probabilities' channels (labels outside the list)."""
    props = {p.key: p.value for p in model.metadata_props}
    try:
        classes = ClassList.from_dict(json.loads(props["classes"]))
        strategy = json.loads(props.get("strategy", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: no readable class list in its metadata ({exc}); export it "
                             f"with python -m deeplab.serving.export") from None
    channels = output_channels(model)
    if channels is not None and channels != len(classes):
        raise ModelFileError(f"{path}: its metadata names {len(classes)} classes but its "
                             f"probabilities have {channels} channels; refusing it (labels would "
                             f"fall outside the class list)")
    return classes, strategy, props
