"""DVC stage finetune: the target dataset's training split (VOC: train_aug) with hard-image
bootstrapping -> models/finetune.pt."""

from deeplab.core.cli import stage_main, stage_paths
from deeplab.core.config import load_params
from deeplab.engine.stage import FINETUNE, StageFiles, run_training_stage


@stage_main
def main() -> None:
    files = StageFiles(**vars(stage_paths("train_list", "val_list", "hard_list", "classes",
                                          "init", "model", "checkpoint", "reports",
                                          "class_stats")))
    params = load_params(sections=("model", "train", "runtime", "finetune", "mlflow"))
    run_training_stage(FINETUNE, params, files)


if __name__ == "__main__":
    main()
