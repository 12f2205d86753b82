"""DVC stage fetch: raw datasets -> data/raw (synthetic, local copy, or download)."""

from pathlib import Path

from deeplab.cli import stage_main
from deeplab.config import load_params
from deeplab.data.fetch import fetch


@stage_main
def main() -> None:
    params = load_params(sections=("data",))
    manifest = fetch(params["data"], Path("data/raw"))
    print(f"fetch: {manifest['source']} data ready: {manifest}")


if __name__ == "__main__":
    main()
