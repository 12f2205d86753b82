"""DVC stage pretrain: DeepLabV3+ on the COCO-derived 21-class data -> models/pretrain.pt."""

from pathlib import Path

from deeplab.cli import stage_main
from deeplab.config import load_params
from deeplab.workflow import run_training_stage

DATA = Path("data/processed")


@stage_main
def main() -> None:
    params = load_params(sections=("model", "train", "pretrain", "mlflow"))
    run_training_stage("pretrain", params, DATA / "coco_train.csv", DATA / "coco_val.csv",
                       Path("models/pretrain.pt"), Path("models/checkpoints/pretrain.ckpt"),
                       Path("reports/pretrain"))


if __name__ == "__main__":
    main()
