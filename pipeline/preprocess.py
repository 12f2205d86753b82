"""DVC stage preprocess: data/raw -> data/processed (masks, split lists, stats, hard images)."""

import json

from deeplab.core.cli import stage_main, stage_paths
from deeplab.core.config import load_params
from deeplab.core.errors import MissingFileError
from deeplab.prepare.preprocess import preprocess


@stage_main
def main() -> None:
    paths = stage_paths("manifest", "out")
    params = load_params(sections=("preprocess",))
    if not paths.manifest.is_file():
        raise MissingFileError(f"{paths.manifest}: not found (run the fetch stage)")
    summary = preprocess(json.loads(paths.manifest.read_text()), paths.out, params.preprocess)
    print(f"preprocess: {json.dumps(summary['samples'])}, hard images {summary['hard_images']}, "
          f"skipped {summary['skipped_bad_samples']}")


if __name__ == "__main__":
    main()
