"""DVC stage variant@<name>: one training ablation (params `ablations.<name>`) with the
finetune schedule -> models/variants/<name>.pt."""

from deeplab.core.cli import stage_main, stage_paths
from deeplab.core.config import load_params
from deeplab.engine.stage import StageFiles, TrainingStage, run_training_stage


@stage_main
def main() -> None:
    paths = vars(stage_paths("train_list", "val_list", "hard_list", "classes", "init", "model",
                             "checkpoint", "reports", "class_stats", positional=("name",)))
    name = paths.pop("name")
    params = load_params(sections=("model", "train", "runtime", "finetune", "ablations",
                                   "mlflow")).variant(name)
    run_training_stage(TrainingStage.variant(name), params, StageFiles(**paths))


if __name__ == "__main__":
    main()
