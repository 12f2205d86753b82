"""DVC stage preprocess: data/raw -> data/processed (masks, split lists, stats, hard images)."""

import json
from pathlib import Path

from deeplab.cli import stage_main
from deeplab.config import load_params
from deeplab.data.preprocess import preprocess
from deeplab.errors import MissingFileError


@stage_main
def main() -> None:
    params = load_params(sections=("preprocess",))
    manifest_file = Path("data/raw/manifest.json")
    if not manifest_file.is_file():
        raise MissingFileError(f"{manifest_file}: not found (run the fetch stage)")
    summary = preprocess(json.loads(manifest_file.read_text()), Path("data/processed"),
                         params["preprocess"])
    print(f"preprocess: {json.dumps(summary['samples'])}, hard images {summary['hard_images']}, "
          f"skipped {summary['skipped_bad_samples']}")


if __name__ == "__main__":
    main()
