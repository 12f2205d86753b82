"""Segment images with a trained model: `python -m deeplab.serving.predict --model M --input I --output O`.

M is a model file (`models/finetune.pt`), a registry or run URI (`models:/deeplabv3plus@champion`,
`runs:/<id>/model`) or an exported program (`.pt2`, see `deeplab.serving.export`). I is an image or
a folder of images (JPEG, PNG, ... of any size; 16-bit images are rescaled). For each
image `<name>.<ext>` O gets `<name>.<ext>.labels.png`, the class ids as a palette PNG in the
model's own colours, and `<name>.<ext>.overlay.jpg`: the extension stays in the name, so
`a.jpg` and `a.png` get their own results. With `--confidence [KIND]` each image also gets
`<name>.<ext>.confidence-<KIND>.png`: per-pixel confidence as 8-bit grey (255 = sure) of the
kind named (`maxprob`, `margin` or `entropy`, also in the PNG's text), from probabilities
calibrated with a registered model's temperature. The log names the classes found in each image;
`--list-classes` prints the model's class list. By default (`--runtime auto --precision auto`)
a registered model runs on what its version serves (the fastest deployed format evaluate
measured within `deploy.max_drop`, the next where this CPU cannot), an `.onnx` file on OpenVINO
fp32 and a model file on torch fp32; the last line names the runtime used. An output that would overwrite an input is refused before anything is
written; files named like our outputs are not taken as inputs. Unreadable images (and
decompression bombs) are reported by name and the command exits with status 2 after
processing the rest.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ..core.choices.backbones import OUTPUT_STRIDES
from ..core.choices.runtimes import FORMATS, PRECISIONS, RUNTIMES
from ..core.cli import run_command
from ..core.errors import ConfigError, DiskFullError, InputError, MissingFileError, OutputError
from ..core.io import make_dirs, save_image
from ..core.schema import InferenceOverrides, TileOptions
from ..core.validation import validate_options
from ..data.images import IMAGE_SUFFIXES, read_rgb
from ..data.palette import overlay, save_label_png
from ..model.device import select_device
from ..uncertainty.confidence import KINDS, ConfidenceCollector, save_confidence_png
from .runtimes import Runner, deployed_source, open_first, open_runner
from .windows import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    WHOLE_PIXELS,
    segment_image,
)

log = logging.getLogger(__name__)
LABELS_SUFFIX, OVERLAY_SUFFIX, CONFIDENCE_MARK = ".labels.png", ".overlay.jpg", ".confidence-"
DEFAULT_THREADS = 1  # measured: docs/model.md "Using a trained model"


def is_own_output(path: Path) -> bool:
    name = path.name
    return name.endswith((LABELS_SUFFIX, OVERLAY_SUFFIX)) or (
        name.endswith(".png") and any(name.endswith(f"{CONFIDENCE_MARK}{k}.png") for k in KINDS))


def confidence_path(labels_path: Path, kind: str) -> Path:
    """The confidence PNG beside a labels PNG."""
    return labels_path.with_name(labels_path.name.removesuffix(LABELS_SUFFIX)
                                 + f"{CONFIDENCE_MARK}{kind}.png")


def list_inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                       and p.is_file() and not is_own_output(p))
        if not files:
            raise MissingFileError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    raise MissingFileError(f"{path}: no such file or folder")


def output_paths(inputs: list[Path], output: Path, confidence: str | None = None
                 ) -> list[tuple[Path, ...]]:
    """(labels, overlay[, confidence]) per input; InputError if one would overwrite an input
    or another output."""
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder (--output takes a folder)")
    pairs = [(output / f"{p.name}{LABELS_SUFFIX}", output / f"{p.name}{OVERLAY_SUFFIX}")
             + ((confidence_path(output / f"{p.name}{LABELS_SUFFIX}", confidence),)
                if confidence else ()) for p in inputs]
    sources = {p.resolve() for p in inputs}
    seen: set[Path] = set()
    for path, pair in zip(inputs, pairs):
        for out in pair:
            resolved = out.resolve()
            if resolved in sources:
                raise InputError(f"{out}: would overwrite an input image; choose another --output")
            if resolved in seen:
                raise InputError(f"{out}: two inputs would write the same result (from {path})")
            seen.add(resolved)
    return pairs


def _failure(path: Path, exc: BaseException) -> str | None:
    """The one line for an image that could not be segmented (None: a bug, re-raised)."""
    if isinstance(exc, InputError):
        return str(exc)
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text \
            or "bad_alloc" in text or "failed to allocate" in text:
        return (f"{path}: out of memory ({type(exc).__name__}); try a smaller --tile (now "
                f"the default {DEFAULT_TILE} above {WHOLE_PIXELS:,} pixels)")
    return None


def predict_files(runner: Runner, inputs: list[Path], output: Path, tile: int | None = None,
                  overlap: float = DEFAULT_OVERLAP, whole_pixels: int = WHOLE_PIXELS,
                  confidence: str | None = None) -> list[str]:
    """Write labels (palette PNGs in the model's colours), overlays and, with `confidence`
    (a kind), confidence PNGs for each input; log the classes found by name; return one line
    per image that failed (the others still run)."""
    classes = runner.classes
    pairs = output_paths(inputs, output, confidence)
    make_dirs(output)
    errors = []
    for path, (labels_path, overlay_path, *conf_path) in zip(inputs, pairs):
        try:
            image = read_rgb(path)
            collect = ConfidenceCollector(*image.shape[:2], confidence, runner.temperature) \
                if confidence else None
            label = segment_image(runner, image, tile, overlap, whole_pixels, collect)
            save_label_png(labels_path, label, classes.palette)
            if collect is not None:
                save_confidence_png(conf_path[0], collect.map, confidence, runner.temperature)
            save_image(overlay_path, Image.fromarray(overlay(image, label, classes.palette,
                                                             classes.background)),
                       format="JPEG", quality=90)
        except (OutputError, DiskFullError):
            raise  # a place that cannot be written: every later image would fail the same way
        except Exception as exc:  # noqa: BLE001 - sorted by _failure: bad inputs, memory, bugs
            line = _failure(path, exc)
            if line is None:
                raise
            errors.append(line)
            log.error("%s", line)
            continue
        found = [f"{classes.names[c]} ({c})" if c < len(classes) else str(c)
                 for c in np.unique(label).tolist() if c != classes.background]
        log.info("%s: %dx%d, classes: %s", path.name, image.shape[1], image.shape[0],
                 ", ".join(found) or "none")
        del image, label
    return errors


def _matches(fmt: str, runtime: str, precision: str) -> bool:
    r, p = fmt.split("/")
    return runtime in ("auto", r) and precision in ("auto", p)


def open_auto(model: str | Path, runtime: str, precision: str, threads: int,
              device: torch.device, overrides: dict[str, Any]) -> Runner:
    """`--runtime`/`--precision auto`: for a registered model (`models:/`, `runs:/`) with its
    own strategy, the formats its version serves on, the fastest first, falling back where this
    machine cannot; an `.onnx` file on OpenVINO (else ONNX Runtime), fp32; anything else on
    torch fp32. A runtime or precision given alongside narrows the choice."""
    spec = str(model)
    if spec.startswith(("models:/", "runs:/")) and not any(v is not None for v in overrides.values()):
        from ..model.files import classes_of
        from ..tracking.registry import registered_files
        from .segmenter import segmenter_from_state

        with registered_files(spec) as (state, strategy, settings, files):
            served = (settings.get("auto") or {}).get("order") or \
                [f"{settings['runtime']}/{settings['precision']}"]
            order = [f for f in served if _matches(f, runtime, precision)]
            if not order:
                order = [f for f in FORMATS if f.startswith("torch/") and _matches(f, runtime, precision)]
            if not order:
                raise ConfigError(f"--runtime {runtime} --precision {precision}: {spec} serves on "
                                  f"{', '.join(served)}; choose one of those or torch")
            runner = open_first(order, deployed_source(
                files, lambda: segmenter_from_state(state, strategy, spec).to(device)),
                threads, device)
            runner.temperature = float(settings.get("temperature", 1.0))
            runner.classes = classes_of(state)
            return runner
    onnx = spec.endswith(".onnx")
    order = [f for f in (("openvino/fp32", "onnxruntime/fp32") if onnx else ("torch/fp32",))
             if _matches(f, runtime, "fp32" if precision == "auto" else precision)]
    if not order:  # an explicit precision with runtime auto
        chosen = ("openvino" if onnx else "torch") if runtime == "auto" else runtime
        order = [f"{chosen}/{'fp32' if precision == 'auto' else precision}"]
    built = not (onnx or Path(spec).is_dir())  # torch refuses ONNX files in one line itself

    def source(runtime: str, _: str) -> Any:
        from .segmenter import load_segmenter

        return load_segmenter(model, device=device, **overrides) if runtime == "torch" and built \
            else model

    return open_first(order, source, threads, device)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab.serving.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model file, models:/ or runs:/ URI, or .pt2")
    parser.add_argument("--input", required=True, type=Path, help="an image or a folder of images")
    parser.add_argument("--output", required=True, type=Path, help="folder for labels and overlays")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES, default=None)
    parser.add_argument("--scales", type=float, nargs="+", default=None,
                        help="multi-scale inference, e.g. 0.5 0.75 1 1.25 1.5 1.75")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="average with the left-right flipped image")
    parser.add_argument("--list-classes", action="store_true",
                        help="print the model's classes (id, name, colour) before predicting")
    parser.add_argument("--runtime", choices=("auto", *RUNTIMES), default="auto",
                        help="auto: a registered model's serving choice (the fastest format "
                             "evaluate measured within deploy.max_drop), else torch for a model "
                             "file or .pt2 and openvino for .onnx | torch | onnxruntime | openvino")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                        help="auto (as --runtime auto; fp32 outside a registered model) | fp32 | "
                             "bf16 (AVX512_BF16/AMX CPUs, GPUs) | int8 (ONNX runtimes)")
    parser.add_argument("--tile", type=int, default=None,
                        help=f"sliding windows of this size (default: {DEFAULT_TILE} for images "
                             f"over {WHOLE_PIXELS:,} pixels, else the whole image)")
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                        help="fraction of a window shared with the next one")
    parser.add_argument("--confidence", nargs="?", const="maxprob", default=None, choices=KINDS,
                        help="also write a confidence PNG per image: maxprob (the default), "
                             "margin or entropy")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="CPU threads (0: the runtime's default, all cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_command(lambda: _predict(args))


def _predict(args: argparse.Namespace) -> int:
    options = validate_options(InferenceOverrides, {
        "output_stride": args.output_stride, "scales": args.scales, "flip": args.flip})
    tiling = validate_options(TileOptions, {"tile": args.tile, "overlap": args.overlap})
    device = select_device(args.device)
    inputs = list_inputs(args.input)
    output_paths(inputs, args.output, args.confidence)  # refuse clobbering before loading
    overrides = {"output_stride": options.output_stride,
                 "scales": tuple(options.scales) if options.scales else None, "flip": options.flip}
    if "auto" in (args.runtime, args.precision):
        runner = open_auto(args.model, args.runtime, args.precision, args.threads, device,
                           overrides)
    else:
        runner = open_runner(args.model, args.runtime, args.precision, args.threads, device,
                             **overrides)
    if args.list_classes:
        for k, name in enumerate(runner.classes.names):
            print(f"{k}\t{name}\t{'#%02x%02x%02x' % tuple(runner.classes.palette[k])}")
    errors = predict_files(runner, inputs, args.output, tiling.tile, tiling.overlap,
                           confidence=args.confidence)
    done = len(inputs) - len(errors)
    print(f"predict: {done} of {len(inputs)} images -> {args.output} ({runner})")
    if errors:
        print(f"error: {len(errors)} of {len(inputs)} image(s) failed:\n  " + "\n  ".join(errors),
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
