"""Export a model for deployment without Python model code: `python -m deeplab.serving.export`.

Writes a `torch.export` program (`.pt2`) of the whole `Segmenter` (uint8 `N x H x W x 3`
in, uint8 `N x H x W` labels out) with dynamic batch, height and width, single-scale
inference at the chosen output stride, optionally with flip. Load it with
`torch.export.load(path).module()`, or compile it ahead of time with AOTInductor.
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

from ..core.cli import run_command
from ..core.errors import InputError
from ..core.io import write_bytes
from ..evaluation.inference import InferenceStrategy
from ..model.choices import OUTPUT_STRIDES
from .segmenter import Segmenter, load_segmenter


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab.serving.export", description=__doc__)
    parser.add_argument("--model", required=True, type=Path, help="model file (models/finetune.pt)")
    parser.add_argument("--output", required=True, type=Path, help="program file to write (.pt2)")
    parser.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES, default=None)
    parser.add_argument("--flip", action="store_true")
    args = parser.parse_args(argv)
    if args.output.suffix != ".pt2":
        print(f"error: {args.output}: the output name must end in .pt2", file=sys.stderr)
        return 2
    return run_command(lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    seg = load_segmenter(args.model, InferenceStrategy(args.output_stride, (1.0,), args.flip))
    export_program(seg, args.output)
    print(f"export: {args.output} ({seg.strategy.as_dict()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
