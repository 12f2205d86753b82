"""DVC stage finetune: the target dataset's training split (VOC: train_aug) with hard-image
bootstrapping -> models/finetune.pt."""

from deeplab.cli import stage_main, stage_paths
from deeplab.config import load_params
from deeplab.engine.stage import run_training_stage


@stage_main
def main() -> None:
    p = stage_paths("train_list", "val_list", "hard_list", "classes", "init", "model", "checkpoint",
                    "reports")
    params = load_params(sections=("model", "train", "runtime", "finetune", "mlflow"))
    run_training_stage("finetune", params, p.train_list, p.val_list, p.model, p.checkpoint,
                       p.reports, p.classes, init_file=p.init, hard_list=p.hard_list)


if __name__ == "__main__":
    main()
