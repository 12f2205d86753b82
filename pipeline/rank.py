"""DVC stage rank: which unlabeled images to label next (the pool's list -> the ranking and a
contact sheet of the top images with their confidence maps)."""

from deeplab.core.cli import stage_main, stage_paths
from deeplab.core.config import load_params
from deeplab.uncertainty.ranking import run_rank_stage


@stage_main
def main() -> None:
    p = stage_paths("model", "pool", "calibration", "out", "sheet")
    params = load_params(sections=("rank",))
    table = run_rank_stage(params, p.model, p.pool, p.calibration, p.out, p.sheet)
    print(f"rank: {len(table)} unlabeled images ranked by {params.rank.score} -> {p.out}")


if __name__ == "__main__":
    main()
