"""DVC stage fetch: raw datasets -> data/raw (synthetic, local copy, or download); the
unlabeled pool's list -> data/pool.csv."""

from deeplab.core.cli import stage_main, stage_paths
from deeplab.core.config import load_params
from deeplab.prepare.fetch import fetch


@stage_main
def main() -> None:
    paths = stage_paths("raw", optional=("pool",))
    params = load_params(sections=("data",))
    manifest = fetch(params.data, paths.raw, paths.pool)
    print(f"fetch: {manifest['source']} data ready: {manifest}")


if __name__ == "__main__":
    main()
