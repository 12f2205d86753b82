"""DVC stage pretrain: DeepLabV3+ on the COCO-derived data of the dataset's classes ->
models/pretrain.pt (without COCO data: a file saying so, and no training)."""

from __future__ import annotations

from argparse import Namespace

from ..core.schema import Params

SECTIONS = ("model", "train", "runtime", "pretrain", "mlflow")
PATHS = ("train_list", "val_list", "classes", "model", "checkpoint", "reports", "class_stats")


def run(params: Params, paths: Namespace) -> str:
    from ..engine.stage import PRETRAIN, StageFiles, run_training_stage

    metrics = run_training_stage(PRETRAIN, params, StageFiles(**vars(paths)))
    if "val_miou" not in metrics:
        return f"pretrain: {metrics.get('skipped', 'nothing to train')}"
    return f"pretrain: COCO val mIoU {metrics['val_miou']:.4f} after {metrics['iterations']} iterations"
