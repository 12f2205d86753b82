"""DVC stage variant@<name>: one training ablation (params `ablations.<name>`) with the
finetune schedule -> models/variants/<name>.pt."""

from deeplab.cli import stage_main, stage_paths
from deeplab.config import load_params
from deeplab.engine.stage import run_training_stage


@stage_main
def main() -> None:
    p = stage_paths("train_list", "val_list", "hard_list", "classes", "init", "model", "checkpoint",
                    "reports", positional=("name",))
    params = load_params(sections=("model", "train", "runtime", "finetune", "ablations",
                                   "mlflow")).variant(p.name)
    run_training_stage("finetune", params, p.train_list, p.val_list, p.model, p.checkpoint,
                       p.reports, p.classes, init_file=p.init, hard_list=p.hard_list,
                       run_name=f"variant@{p.name}", partial_init=True)


if __name__ == "__main__":
    main()
