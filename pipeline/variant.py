"""DVC stage variant@<name>: one training ablation (params `ablations.<name>`) with the
finetune schedule -> models/variants/<name>.pt. Usage: python pipeline/variant.py <name>."""

import sys
from pathlib import Path

from deeplab.cli import stage_main
from deeplab.config import load_params
from deeplab.workflow import run_training_stage, variant_params

DATA = Path("data/processed")


@stage_main
def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    params = variant_params(load_params(sections=("model", "train", "finetune", "ablations",
                                                  "mlflow")), name)
    run_training_stage("finetune", params, DATA / "voc_train_aug.csv", DATA / "voc_val.csv",
                       Path(f"models/variants/{name}.pt"),
                       Path(f"models/checkpoints/variant_{name}.ckpt"),
                       Path(f"reports/variants/{name}"), init_file=Path("models/pretrain.pt"),
                       hard_list=DATA / "hard_images.txt", run_name=f"variant@{name}",
                       partial_init=True)


if __name__ == "__main__":
    main()
