"""DVC stage pretrain: DeepLabV3+ on the COCO-derived data of the dataset's classes ->
models/pretrain.pt (without COCO data: a file saying so, and no training)."""

from deeplab.core.cli import stage_main, stage_paths
from deeplab.core.config import load_params
from deeplab.engine.stage import PRETRAIN, StageFiles, run_training_stage


@stage_main
def main() -> None:
    files = StageFiles(**vars(stage_paths("train_list", "val_list", "classes", "model",
                                          "checkpoint", "reports", "class_stats")))
    params = load_params(sections=("model", "train", "runtime", "pretrain", "mlflow"))
    run_training_stage(PRETRAIN, params, files)


if __name__ == "__main__":
    main()
