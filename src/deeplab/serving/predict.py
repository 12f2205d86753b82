"""Segment images with a trained model: `python -m deeplab.serving.predict --model M --input I --output O`.

M is a model file (`models/finetune.pt`), a registry or run URI (`models:/deeplabv3plus@champion`,
`runs:/<id>/model`) or an exported program (`.pt2`, see `deeplab.serving.export`). I is an image or
a folder of images (JPEG, PNG, ... of any size; 16-bit images are rescaled). For each
image `<name>.<ext>` O gets `<name>.<ext>.labels.png`, the class ids as a palette PNG in the
model's own colours, and `<name>.<ext>.overlay.jpg`: the extension stays in the name, so
`a.jpg` and `a.png` get their own results. The log names the classes found in each image;
`--list-classes` prints the model's class list. An output that would overwrite an input is refused before anything is
written; files named like our outputs are not taken as inputs. Unreadable images (and
decompression bombs) are reported by name and the command exits with status 2 after
processing the rest.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..core.cli import run_command
from ..core.errors import InputError, MissingFileError
from ..core.io import save_image
from ..core.schema import InferenceOverrides
from ..core.validation import validate_options
from ..data.classes import ClassList
from ..data.palette import overlay, save_label_png
from ..device import select_device
from ..model.choices import OUTPUT_STRIDES
from .segmenter import load_segmenter

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
LABELS_SUFFIX, OVERLAY_SUFFIX = ".labels.png", ".overlay.jpg"


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    """`H x W x 3` uint8; 16- and 32-bit grey levels are rescaled to 0-255, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.array(img.convert("RGB"))


def read_rgb(path: Path) -> np.ndarray:
    """`H x W x 3` uint8; an InputError naming a file that is not a readable image."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_uint8_rgb(img)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: skipped, too many pixels for an image (decompression-bomb "
                         f"guard: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise InputError(f"{path}: not a readable image ({exc})") from None


def is_own_output(path: Path) -> bool:
    return path.name.endswith((LABELS_SUFFIX, OVERLAY_SUFFIX))


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


def output_paths(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """(labels, overlay) per input; InputError if one would overwrite an input or another output."""
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder (--output takes a folder)")
    pairs = [(output / f"{p.name}{LABELS_SUFFIX}", output / f"{p.name}{OVERLAY_SUFFIX}")
             for p in inputs]
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


def predict_files(segment: Callable[[torch.Tensor], torch.Tensor], inputs: list[Path],
                  output: Path, device: torch.device) -> list[str]:
    """Write labels (palette PNGs in the model's colours) and overlays for each input; log the
    classes found by name; return the errors of unreadable ones."""
    classes = getattr(segment, "classes", None) or ClassList.default(256)
    pairs = output_paths(inputs, output)
    output.mkdir(parents=True, exist_ok=True)
    errors = []
    for path, (labels_path, overlay_path) in zip(inputs, pairs):
        try:
            image = read_rgb(path)
        except InputError as exc:
            errors.append(str(exc))
            log.error("%s", exc)
            continue
        with torch.no_grad():
            label = segment(torch.from_numpy(image).unsqueeze(0).to(device))[0].cpu().numpy()
        save_label_png(labels_path, label, classes.palette)
        save_image(overlay_path, Image.fromarray(overlay(image, label, classes.palette,
                                                         classes.background)),
                   format="JPEG", quality=90)
        found = [f"{classes.names[c]} ({c})" if c < len(classes) else str(c)
                 for c in np.unique(label).tolist() if c != classes.background]
        log.info("%s: %dx%d, classes: %s", path.name, image.shape[1], image.shape[0],
                 ", ".join(found) or "none")
    return errors


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_command(lambda: _predict(args))


def _predict(args: argparse.Namespace) -> int:
    options = validate_options(InferenceOverrides, {
        "output_stride": args.output_stride, "scales": args.scales, "flip": args.flip})
    device = select_device(args.device)
    inputs = list_inputs(args.input)
    output_paths(inputs, args.output)  # refuse a clobbering output before loading anything
    segment = load_segmenter(args.model, device=device, output_stride=options.output_stride,
                             scales=tuple(options.scales) if options.scales else None,
                             flip=options.flip)
    if args.list_classes:
        classes = getattr(segment, "classes", None)
        for k, name in enumerate(classes.names if classes else []):
            print(f"{k}\t{name}\t{'#%02x%02x%02x' % tuple(classes.palette[k])}")
    errors = predict_files(segment, inputs, args.output, device)
    done = len(inputs) - len(errors)
    print(f"predict: {done} of {len(inputs)} images -> {args.output}")
    if errors:
        print(f"error: {len(errors)} unreadable input(s):\n  " + "\n  ".join(errors), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
