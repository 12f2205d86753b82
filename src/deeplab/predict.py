"""Segment images with a trained model: `python -m deeplab.predict --model M --input I --output O`.

M is a model file (`models/finetune.pt`), a registry or run URI (`models:/deeplabv3plus@champion`,
`runs:/<id>/model`) or an exported program (`.pt2`, see `deeplab.export`). I is an image or
a folder of images (JPEG, PNG, ... of any size). For each image O gets `<name>.png`, the
labels as a VOC palette PNG, and `<name>_overlay.jpg`. Unreadable images are reported by
name and the command exits with status 2 after processing the rest.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .checkpoint import load_model
from .data.palette import overlay, save_label_png
from .io import atomic_path
from .segmenter import Segmenter
from .train import select_device

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def load_segmenter(spec: str, device: torch.device, output_stride: int | None = None,
                   scales: Sequence[float] | None = None, flip: bool | None = None
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable uint8 `N x H x W x 3` -> uint8 `N x H x W` from a file, URI or `.pt2` program.

    `output_stride`, `scales` and `flip` override the strategy a registered model carries
    (a `.pt2` program has its strategy compiled in and accepts no override).
    """
    if spec.endswith(".pt2"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"{spec}: exported program not found")
        if output_stride or scales or flip is not None:
            raise ValueError(f"{spec}: an exported program has a fixed inference strategy; "
                             f"re-export it to change output stride, scales or flip")
        return torch.export.load(spec).module().to(device)
    if spec.startswith(("models:/", "runs:/")) or "://" in spec:
        import mlflow.pytorch

        from .tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        try:
            served = mlflow.pytorch.load_model(spec, map_location=device)
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds
            raise ValueError(f"{spec}: cannot load the model ({exc})") from exc
        net = served.net
        default = served.strategy
    else:
        net = load_model(spec)
        default = {"output_stride": None, "scales": [1.0], "flip": False}
    seg = Segmenter(net, output_stride or default["output_stride"],
                    scales or default["scales"], default["flip"] if flip is None else flip)
    return seg.to(device).eval()


def read_rgb(path: Path) -> np.ndarray:
    """`H x W x 3` uint8; a clear error for a file that is not a readable image."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.array(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc


def list_inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    raise FileNotFoundError(f"{path}: no such file or folder")


def predict_files(segment: Callable[[torch.Tensor], torch.Tensor], inputs: list[Path],
                  output: Path, device: torch.device) -> list[str]:
    """Write labels and overlays for each input; return the errors of unreadable ones."""
    output.mkdir(parents=True, exist_ok=True)
    errors = []
    for path in inputs:
        try:
            image = read_rgb(path)
        except ValueError as exc:
            errors.append(str(exc))
            log.error("%s", exc)
            continue
        with torch.no_grad():
            label = segment(torch.from_numpy(image).unsqueeze(0).to(device))[0].cpu().numpy()
        save_label_png(output / f"{path.stem}.png", label)
        with atomic_path(output / f"{path.stem}_overlay.jpg") as tmp:
            Image.fromarray(overlay(image, label)).save(tmp, format="JPEG", quality=90)
        classes = np.unique(label[label > 0]).tolist()
        log.info("%s: %dx%d, classes %s", path.name, image.shape[1], image.shape[0], classes)
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model file, models:/ or runs:/ URI, or .pt2")
    parser.add_argument("--input", required=True, type=Path, help="an image or a folder of images")
    parser.add_argument("--output", required=True, type=Path, help="folder for labels and overlays")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--output-stride", type=int, choices=[8, 16, 32], default=None)
    parser.add_argument("--scales", type=float, nargs="+", default=None,
                        help="multi-scale inference, e.g. 0.5 0.75 1 1.25 1.5 1.75")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="average with the left-right flipped image")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        device = select_device(args.device)
        inputs = list_inputs(args.input)
        segment = load_segmenter(args.model, device, args.output_stride, args.scales, args.flip)
        errors = predict_files(segment, inputs, args.output, device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = len(inputs) - len(errors)
    print(f"predict: {done} of {len(inputs)} images -> {args.output}")
    if errors:
        print(f"error: {len(errors)} unreadable input(s):\n  " + "\n  ".join(errors), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
