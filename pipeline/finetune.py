"""DVC stage finetune: VOC train_aug with hard-image bootstrapping -> models/finetune.pt."""

from pathlib import Path

from deeplab.cli import stage_main
from deeplab.config import load_params
from deeplab.workflow import run_training_stage

DATA = Path("data/processed")


@stage_main
def main() -> None:
    params = load_params(sections=("model", "train", "finetune", "mlflow"))
    run_training_stage("finetune", params, DATA / "voc_train_aug.csv", DATA / "voc_val.csv",
                       Path("models/finetune.pt"), Path("models/checkpoints/finetune.ckpt"),
                       Path("reports/finetune"), init_file=Path("models/pretrain.pt"),
                       hard_list=DATA / "hard_images.txt")


if __name__ == "__main__":
    main()
