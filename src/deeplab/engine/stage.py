"""What the pretrain and finetune stages do, shared: one function with the stage as parameter."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import ModelConfig, Params
from ..data.classes import ClassList, read_classes
from ..data.dataset import SegmentationDataset, read_list, repeat_rows
from ..device import select_device
from ..errors import ConfigError, ModelFileError
from ..evaluation.evaluate import evaluate
from ..io import write_csv, write_json
from ..model import DeepLabV3Plus
from ..model_files import read_model_file, save_model, state_digest
from ..tracking import dvc_experiment, files_hash, files_signature, git_commit, start_stage_run
from .checkpoints import code_signature, fingerprint, load_checkpoint
from .distributed import init_from_env, shutdown
from .loop import seed_everything, train

log = logging.getLogger(__name__)
NO_PRETRAINING = "no COCO data to pretrain on"


def build_model(cfg: ModelConfig, num_classes: int,
                pretrained_backbone: str | None = None) -> DeepLabV3Plus:
    """The network described by `params.model` (with backbone weights if given)."""
    try:
        return DeepLabV3Plus(num_classes=num_classes, pretrained_backbone=pretrained_backbone,
                             **cfg.network_kwargs())
    except FileNotFoundError as exc:  # model.pretrained_backbone names a missing file
        raise ConfigError(f"model.pretrained_backbone: {exc}") from None
    except ValueError as exc:  # a weights file of another network
        raise ModelFileError(f"model.pretrained_backbone: {exc}") from None


def _transfer_source(init: str) -> tuple[dict[str, Any], str]:
    """The checked model-file contents behind `finetune.init` (a file or a models:/ URI), and
    a digest of them."""
    if init.startswith(("models:/", "runs:/")):
        from ..registered import load_registered  # MLflow: loaded only for a URI

        state, _ = load_registered(init)
    else:
        state = read_model_file(Path(init).expanduser())
    return state, state_digest(state, {})


def _transfer(model: DeepLabV3Plus, state: dict[str, Any], source: str, key: str) -> str:
    """Load the tensors of another trained model whose names and shapes match; the classifier
    of another class count keeps its fresh initialisation."""
    theirs, ours = state["config"].get("backbone"), model.config["backbone"]
    if theirs != ours:
        raise ModelFileError(f"{key}: {source} is a {theirs} model, this one is {ours}; set "
                             f"model.backbone: {theirs}, or start from a {ours} model")
    fresh = model.load_matching_weights(state["state_dict"])
    log.info("from %s: %d tensors loaded; not loaded (kept their initialisation): %s", source,
             len(model.state_dict()) - len(fresh), ", ".join(fresh) or "none")
    return f"model {source}" + (f" ({len(fresh)} tensors re-initialised)" if fresh else "")


def initial_model(stage: str, params: Params, num_classes: int, init_file: Path | None,
                  partial: bool = False) -> tuple[DeepLabV3Plus, str]:
    """The model a stage starts from, and a description of where its weights came from.

    With `partial`, a pretrain checkpoint of another architecture (an ablation variant)
    gives the tensors whose names and shapes match; the rest keep their initialisation.
    """
    model_cfg = params.model
    init = params.finetune.init if stage == "finetune" else "imagenet"
    if init == "pretrain":
        state = read_model_file(init_file)
        if state["info"].get("skipped"):
            raise ConfigError(
                f"finetune.init is 'pretrain' but the pretrain stage had {NO_PRETRAINING} "
                f"(data.coco_root is null, or synthetic.coco_train_images is 0); set finetune.init "
                f"to scratch, imagenet (with model.pretrained_backbone), or a model file or "
                f"models:/ URI to transfer from")
        model = build_model(model_cfg, num_classes)
        if not partial:
            try:
                model.load_weights(state["state_dict"], source=str(init_file))
            except ValueError as exc:
                raise ModelFileError(str(exc)) from None
            return model, f"pretrain checkpoint {init_file}"
        fresh = model.load_matching_weights(state["state_dict"])
        log.info("from %s: %d tensors re-initialised (%s)", init_file, len(fresh),
                 ", ".join(sorted({k.rsplit(".", 2)[0] for k in fresh}))[:300] or "none")
        return model, (f"pretrain checkpoint {init_file}" + (
            f" (matching tensors; {len(fresh)} re-initialised)" if fresh else ""))
    if init == "imagenet" and model_cfg.pretrained_backbone:
        return build_model(model_cfg, num_classes, model_cfg.pretrained_backbone), \
            f"backbone {model_cfg.pretrained_backbone}"
    if stage == "finetune" and init == "imagenet":
        raise ConfigError("finetune.init is 'imagenet' but model.pretrained_backbone is null; set "
                          "it to 'imagenet' or a weights file")
    model = build_model(model_cfg, num_classes)
    if init in ("scratch", "imagenet"):
        return model, "random initialisation"
    state, _ = _transfer_source(init)
    return model, _transfer(model, state, init, "finetune.init")


def skip_pretraining(params: Params, classes: ClassList, out_model: Path, reports: Path,
                     checkpoint: Path | None = None) -> dict[str, Any]:
    """The pretrain stage without COCO data: a model file that says so (finetune refuses to
    start from it), a checkpoint that resumes nothing, and empty curves; no training."""
    from ..io import save_torch

    model = build_model(params.model, len(classes))
    info = {"stage": "pretrain", "skipped": NO_PRETRAINING}
    save_torch(out_model, {"config": model.config, "state_dict": {}, "classes": classes.as_dict(),
                           "info": info})
    if checkpoint is not None:
        save_torch(checkpoint, {"fingerprint": None, "iteration": 0, **info})
    metrics = {"skipped": NO_PRETRAINING, "iterations": 0}
    reports.mkdir(parents=True, exist_ok=True)
    write_csv(reports / "curve.csv", pd.DataFrame(columns=["iteration", "loss", "lr", "images_per_s"]),
              index=False)
    write_csv(reports / "val_curve.csv", pd.DataFrame(columns=["iteration", "val_miou"]), index=False)
    write_json(reports / "metrics.json", metrics)
    log.info("pretrain: %s; nothing to train", NO_PRETRAINING)
    return metrics


def run_training_stage(stage: str, params: Params, train_list: Path, val_list: Path,
                       out_model: Path, checkpoint: Path, reports: Path, classes_file: Path,
                       init_file: Path | None = None, hard_list: Path | None = None,
                       run_name: str | None = None, partial_init: bool = False) -> dict[str, Any]:
    """Train for one stage, validate on full images, write the model, curves and metrics.

    `stage` names the schedule section (pretrain | finetune); `run_name` the DVC stage
    (default: `stage`), used for the MLflow run and the checkpoint fingerprint. The class
    count and names come from the data (`classes_file`).
    """
    import mlflow

    sched = getattr(params, stage)
    classes = read_classes(classes_file)
    torch.set_num_threads(params.runtime.threads or torch.get_num_threads())
    base = read_list(train_list)
    if stage == "pretrain" and base.empty:
        return skip_pretraining(params, classes, out_model, reports, checkpoint)
    hard_ids = hard_list.read_text().split() if hard_list is not None else []
    rows = repeat_rows(base, hard_ids, sched.repeat_hard)
    val_rows = read_list(val_list)
    run_name = run_name or stage
    seed_everything(params.seed)  # the initialisation of new layers is part of the run
    model, origin = initial_model(stage, params, len(classes), init_file, partial_init)
    fill = tuple(int(round(255 * float(m))) for m in model.mean.flatten())
    dataset = SegmentationDataset(rows, sched.crop_size, sched.scale_range, sched.flip,
                                  fill=fill)
    info, device = init_from_env(select_device(params.train.device))
    data_files = [train_list, val_list, classes_file] + ([hard_list] if hard_list else [])
    log.info("%s: %d training samples (%d hard repeats), init from %s, device %s, process %d of %d",
             stage, len(rows), len(rows) - len(base), origin, device, info.rank + 1, info.world_size)
    settings = params.as_dict()
    fp = {"stage": run_name, "params": {k: settings[k] for k in ("seed", "model", stage)},
          "data": files_hash(data_files),
          "files": files_signature(dataset.images + dataset.masks),
          "init": (files_hash([init_file]) if init_file and origin.startswith("pretrain") else
                   _transfer_source(params.finetune.init)[1] if origin.startswith("model ") else origin),
          "code": code_signature()}

    def validate(m: torch.nn.Module, it: int) -> dict[str, float]:
        miou = evaluate(m, val_rows, len(classes), device, desc="val")["miou"]
        mlflow.log_metric("val_miou", miou, step=it)
        return {"val_miou": miou}

    resume = load_checkpoint(checkpoint, fingerprint(fp), sched.iterations)
    try:
        with start_stage_run(run_name, params, params.mlflow.experiment, data_files,
                             resume_run_id=resume.get("run_id") if resume else None,
                             splits={"train": train_list, "validation": val_list}) \
                if info.is_main else contextlib.nullcontext() as run:
            if info.is_main:
                mlflow.set_tag("init", origin)
                mlflow.set_tag("processes", str(info.world_size))
            result = train(model, dataset, sched, params.train, params.runtime, checkpoint, params.seed, fp,
                           on_log=lambda it, rec: mlflow.log_metrics(rec, step=it),
                           on_validate=validate, device=device, rank=info.rank,
                           world_size=info.world_size, resume=resume,
                           run_id=run.info.run_id if run else None)
            if not info.is_main:  # rank 0 alone validates and writes
                return {}
            final = evaluate(model, val_rows, len(classes), device, desc="val")
            val_curve = result.val_history + [{"iteration": result.iterations, "val_miou": final["miou"]}]
            metrics = {"val_miou": final["miou"], "val_pixel_acc": final["pixel_acc"],
                       "iterations": result.iterations, "train_seconds": round(result.seconds, 1),
                       "train_images_per_s": round(result.images_per_s, 2),
                       "resumed_from": result.resumed_from, "processes": info.world_size}
            # At the last iteration: the runs table shows each metric's value at its last step.
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=result.iterations)
            save_model(out_model, model.cpu(), classes, stage=run_name, val_miou=final["miou"], init=origin,
                       iterations=result.iterations, run_id=run.info.run_id,
                       data_hash=fp["data"], git_commit=git_commit(), params=settings,
                       experiment=dvc_experiment())
            reports.mkdir(parents=True, exist_ok=True)
            write_csv(reports / "curve.csv", pd.DataFrame(result.history), index=False)
            write_csv(reports / "val_curve.csv", pd.DataFrame(val_curve), index=False)
            write_json(reports / "metrics.json", metrics)
    finally:
        shutdown()
    log.info("%s: val mIoU %.4f after %d iterations (%.1f img/s)", stage, metrics["val_miou"],
             result.iterations, result.images_per_s)
    return metrics
