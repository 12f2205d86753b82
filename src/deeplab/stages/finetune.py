"""DVC stages finetune and variant@<name>: the target dataset's training split (VOC:
train_aug) with hard-image bootstrapping, from the pretrained weights -> models/finetune.pt;
with `--variant NAME`, the training ablation `ablations.<NAME>` on the same schedule ->
models/variants/<NAME>.pt."""

from __future__ import annotations

from argparse import Namespace

from ..core.schema import Params

SECTIONS = ("model", "train", "runtime", "finetune", "ablations", "mlflow")
PATHS = ("train_list", "val_list", "hard_list", "classes", "init", "model", "checkpoint",
         "reports", "class_stats")
OPTIONS = ("variant",)


def run(params: Params, paths: Namespace) -> str:
    from ..engine.stage import FINETUNE, StageFiles, TrainingStage, run_training_stage

    files = dict(vars(paths))
    name = files.pop("variant")
    stage, params = (FINETUNE, params) if name is None else \
        (TrainingStage.variant(name), params.variant(name))
    metrics = run_training_stage(stage, params, StageFiles(**files))
    return f"{stage.name}: val mIoU {metrics.get('val_miou', float('nan')):.4f}"
