"""Export a model for deployment without Python model code: `python -m deeplab.serving.export
--model M --format pt2|onnx --output X`.

Both formats take uint8 RGB `N x H x W x 3` (batch, height and width dynamic), normalise inside,
and give uint8 `N x H x W` labels (`--probabilities` adds the float class probabilities, which
tiles and confidence maps need); single-scale inference at the chosen output stride,
optionally with flip.

- `pt2`: a `torch.export` program; `torch.export.load(path).module()`, or AOTInductor.
- `onnx`: for ONNX Runtime and OpenVINO (`predict --runtime onnxruntime|openvino`), with the
  class names, palette, strategy and the source model's sha256 in its metadata.
  `--precision int8` also writes `<name>.int8.onnx`, statically quantized (QDQ) on
  `--calibration-images` crops of the images in `--calibration` (a split list).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch.export import Dim

from ..core.choices.backbones import OUTPUT_STRIDES
from ..core.cli import run_command
from ..core.errors import InputError
from ..core.io import check_writable, write_bytes
from ..model.inference import InferenceStrategy
from .segmenter import Segmenter, load_segmenter, segmenter_from_state

FORMATS = ("pt2", "onnx")


def export_program(seg: Segmenter, path: Path, example_size: int = 97, max_size: int = 4096) -> None:
    """Export `seg` with dynamic N, H, W (H, W in [33, max_size]) to `path`, atomically.

    Single-scale strategies only (any output stride, flip or not): multi-scale resizing
    makes size guards that `torch.export` cannot prove for every input size.
    """
    if seg.strategy.multi_scale:
        raise InputError(f"export supports single-scale inference (scales [1.0]), got "
                         f"{list(seg.strategy.scales)}; use `python -m deeplab.serving.predict` for "
                         f"multi-scale")
    example = torch.randint(0, 256, (2, example_size, example_size, 3), dtype=torch.uint8)
    dims = {0: Dim("batch", min=1, max=1024), 1: Dim("height", min=33, max=max_size),
            2: Dim("width", min=33, max=max_size)}
    program = torch.export.export(seg.eval(), (example,), dynamic_shapes={"images": dims})
    buffer = io.BytesIO()  # torch's writer reports a full disk opaquely: write the bytes ourselves
    torch.export.save(program, buffer,
                      extra_files={"classes.json": json.dumps(seg.classes.as_dict())})
    write_bytes(path, buffer.getbuffer())


def export(model: str, output: Path, fmt: str, strategy: InferenceStrategy,
           probabilities: bool = False, precision: str = "fp32", calibration: Path | None = None,
           calibration_images: int = 32, calibration_size: int = 97, seed: int = 0) -> list[Path]:
    """Write `model` as `fmt` to `output` (and its int8 twin); the paths written."""
    from ..model.files import read_model_file, state_digest

    suffix = "." + fmt
    if output.suffix != suffix:
        raise InputError(f"{output}: the output name of a {fmt} export must end in {suffix}")
    check_writable(output.parent)
    if Path(model).suffix == ".pt":  # a model file: read once, for the network and its digest
        state = read_model_file(model)
        seg, digest = segmenter_from_state(state, strategy, model), state_digest(state, {})
    else:
        seg, digest = load_segmenter(model, strategy), None
    if fmt == "pt2":
        if probabilities or precision != "fp32":
            raise InputError("--probabilities and --precision apply to --format onnx")
        export_program(seg, output)
        return [output]
    from .onnx_files import export_onnx
    from .runtimes import INT8_SUFFIX

    export_onnx(seg, output, probabilities=probabilities, source_sha256=digest)
    written = [output]
    if precision == "int8":
        if calibration is None:
            raise InputError("--precision int8: give --calibration, a split list of images to "
                             "calibrate on (e.g. data/processed/train.csv)")
        from .quantize import calibration_crops, quantize_int8

        int8 = output.with_name(output.name.removesuffix(".onnx") + INT8_SUFFIX)
        quantize_int8(output, int8, calibration_crops(calibration, calibration_images,
                                                      calibration_size, seed))
        written.append(int8)
    elif precision != "fp32":
        raise InputError(f"--precision {precision}: an export is fp32 or int8 (bf16 is a runtime "
                         f"setting: predict --runtime openvino --precision bf16)")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab.serving.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model file (models/finetune.pt) or models:/ URI")
    parser.add_argument("--output", required=True, type=Path, help="file to write (.pt2 or .onnx)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="pt2 | onnx (default: from the output's suffix)")
    parser.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES, default=None)
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--probabilities", action="store_true",
                        help="onnx: add the class probabilities output")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="int8: split list of calibration images (data/processed/train.csv)")
    parser.add_argument("--calibration-images", type=int, default=32)
    args = parser.parse_args(argv)
    fmt = args.format or args.output.suffix.lstrip(".")
    if fmt not in FORMATS:
        print(f"error: {args.output}: the output name must end in .pt2 or .onnx (or give "
              f"--format)", file=sys.stderr)
        return 2
    return run_command(lambda: _export(args, fmt))


def _export(args: argparse.Namespace, fmt: str) -> int:
    written = export(args.model, args.output, fmt,
                     InferenceStrategy(args.output_stride, (1.0,), args.flip), args.probabilities,
                     args.precision, args.calibration, args.calibration_images)
    print(f"export: {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
