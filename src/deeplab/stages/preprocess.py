"""DVC stage preprocess: data/raw -> data/processed (class-id masks, split lists, the class
list, statistics, hard images)."""

from __future__ import annotations

import json
from argparse import Namespace

from ..core.errors import MissingFileError
from ..core.schema import Params

SECTIONS = ("preprocess",)
PATHS = ("manifest", "out")


def run(params: Params, paths: Namespace) -> str:
    from ..prepare.preprocess import preprocess

    if not paths.manifest.is_file():
        raise MissingFileError(f"{paths.manifest}: not found (run the fetch stage)")
    summary = preprocess(json.loads(paths.manifest.read_text()), paths.out, params.preprocess)
    return (f"preprocess: {json.dumps(summary['samples'])}, hard images {summary['hard_images']}, "
            f"skipped {summary['skipped_bad_samples']}")
