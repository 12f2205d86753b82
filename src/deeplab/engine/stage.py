"""What the training stages (pretrain, finetune, the ablation variants) do: one function with
the stage as a value, in named steps."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..core.errors import ConfigError, MissingFileError
from ..core.hashing import files_hash, files_signature
from ..core.io import make_dirs, write_csv, write_json
from ..core.schema import Params
from ..data.classes import ClassList, read_classes
from ..data.dataset import SegmentationDataset, read_list, repeat_rows
from ..evaluation.evaluate import evaluate
from ..model import DeepLabV3Plus
from ..model.device import select_device
from ..model.files import save_model
from ..sweep.pruning import TrialPruned, reporter
from ..tracking.runs import dvc_experiment, git_commit, start_stage_run
from ..tracking.spool import MetricSpool, end_run, spool_file
from .checkpoints import code_signature, fingerprint, load_checkpoint
from .distributed import init_from_env, shutdown
from .init import NO_PRETRAINING, Start, build_model, initial_model
from .loop import TrainOptions, TrainResult, seed_everything, train
from .losses import class_weights

log = logging.getLogger(__name__)


def skip_pretraining(params: Params, classes: ClassList, out_model: Path, reports: Path,
                     checkpoint: Path | None = None) -> dict[str, Any]:
    """The pretrain stage without COCO data: a model file that says so (finetune refuses to
    start from it), a checkpoint that resumes nothing, and empty curves; no training."""
    from ..core.io import save_torch

    model = build_model(params.model, len(classes))
    info = {"stage": "pretrain", "skipped": NO_PRETRAINING}
    save_torch(out_model, {"config": model.config, "state_dict": {}, "classes": classes.as_dict(),
                           "info": info})
    if checkpoint is not None:
        save_torch(checkpoint, {"fingerprint": None, "iteration": 0, **info})
    metrics = {"skipped": NO_PRETRAINING, "iterations": 0}
    make_dirs(reports)
    write_csv(reports / "curve.csv", pd.DataFrame(columns=["iteration", "loss", "lr", "images_per_s"]),
              index=False)
    write_csv(reports / "val_curve.csv", pd.DataFrame(columns=["iteration", "val_miou"]), index=False)
    write_json(reports / "metrics.json", metrics)
    write_json(reports / "timing.json", {})
    log.info("pretrain: %s; nothing to train", NO_PRETRAINING)
    return metrics


@dataclass(frozen=True)
class TrainingStage:
    """A DVC training stage: its name (MLflow run, checkpoint fingerprint, model file info) and
    the params section holding its schedule. Ablation variants start from the pretrain
    checkpoint's tensors that match their architecture (`partial_init`)."""

    name: str
    schedule: str
    partial_init: bool = False

    @classmethod
    def variant(cls, name: str) -> "TrainingStage":
        return cls(f"variant@{name}", "finetune", partial_init=True)

    @property
    def ablation(self) -> str:
        """What its MLflow run's `ablation` param says: `main`, or the variant's name."""
        return self.name.split("@", 1)[1] if "@" in self.name else "main"

    @property
    def metric_prefix(self) -> str:
        """Pretrain validates on COCO's val split: its curve has its own names (`coco_val_miou`)."""
        return "coco_" if self.schedule == "pretrain" else ""


PRETRAIN = TrainingStage("pretrain", "pretrain")
FINETUNE = TrainingStage("finetune", "finetune")


@dataclass(frozen=True)
class StageFiles:
    """What a training stage reads and writes (paths given by dvc.yaml)."""

    train_list: Path
    val_list: Path
    classes: Path
    model: Path
    checkpoint: Path
    reports: Path
    init: Path | None = None
    hard_list: Path | None = None
    class_stats: Path | None = None  # preprocess's per-class pixel counts (class weights)

    @property
    def data_files(self) -> list[Path]:
        """The small files that define the data (hashed into the run's `data.hash`)."""
        return [self.train_list, self.val_list, self.classes] + \
            ([self.hard_list] if self.hard_list else [])


def training_data(stage: TrainingStage, params: Params, files: StageFiles,
                  mean: torch.Tensor) -> tuple[SegmentationDataset, pd.DataFrame, int]:
    """The augmented training set (hard images repeated), the validation rows, and how many
    rows the repeats added. Crops are padded with the backbone's `mean` pixel."""
    sched = getattr(params, stage.schedule)
    base = read_list(files.train_list)
    hard_ids = files.hard_list.read_text().split() if files.hard_list is not None else []
    rows = repeat_rows(base, hard_ids, sched.repeat_hard)
    fill = tuple(int(round(255 * float(m))) for m in mean.flatten())
    dataset = SegmentationDataset(rows, sched.crop_size, sched.scale_range, sched.flip, fill=fill,
                                  jitter=sched.color_jitter, blur=sched.gaussian_blur)
    return dataset, read_list(files.val_list), len(rows) - len(base)


def stage_class_weights(stage: TrainingStage, sched: Any, files: StageFiles,
                        classes: ClassList) -> list[float] | None:
    """The schedule's `class_weights`, computed from the pixel counts of the split it trains
    on (`class_stats.csv`: coco_train for pretrain, train otherwise)."""
    if sched.class_weights is None:
        return None
    key = f"{stage.schedule}.class_weights"
    if isinstance(sched.class_weights, list):
        if len(sched.class_weights) != len(classes):
            raise ConfigError(f"{key}: {len(sched.class_weights)} weights for the "
                              f"{len(classes)} classes ({', '.join(classes.names)})")
        return class_weights(sched.class_weights, [1] * len(classes))
    if files.class_stats is None or not files.class_stats.is_file():
        raise MissingFileError(f"{key}: {sched.class_weights} needs preprocess's class_stats.csv "
                               f"({files.class_stats})")
    stats = pd.read_csv(files.class_stats)
    split = "coco_train" if stage == PRETRAIN else "train"
    rows = stats[stats["split"] == split].sort_values("class_id")
    if rows["class"].tolist() != list(classes.names):
        raise ConfigError(f"{files.class_stats}: its classes differ from {files.classes}; rerun "
                          f"preprocess (dvc repro)")
    return class_weights(sched.class_weights, rows["pixels"].tolist())


def run_fingerprint(stage: TrainingStage, params: Params, files: StageFiles,
                    dataset: SegmentationDataset, start: Start) -> dict[str, Any]:
    """What a checkpoint must have been written with to be resumed: the stage, its settings,
    the data (lists and files), where the initial weights came from, and the loaded code."""
    settings = params.as_dict()
    return {"stage": stage.name, "params": {k: settings[k] for k in ("seed", "model", stage.schedule)},
            "data": files_hash(files.data_files),
            "files": files_signature(dataset.images + dataset.masks), "init": start.key,
            "code": code_signature()}


def write_results(stage: TrainingStage, params: Params, files: StageFiles, model: DeepLabV3Plus,
                  classes: ClassList, result: TrainResult, final: dict[str, Any], origin: str,
                  run_id: str, data_hash: str, processes: int,
                  log_metrics: Any) -> dict[str, Any]:
    """The model file, the loss and validation curves and the metrics of a finished stage
    (`log_metrics(record, step)` sends them to the run)."""
    val_curve = list(result.val_history)
    if not val_curve or val_curve[-1]["iteration"] != result.iterations:  # not stopped there
        val_curve.append({"iteration": result.iterations, "val_miou": final["last_miou"]})
    metrics = {"val_miou": final["miou"], "val_pixel_acc": final["pixel_acc"],
               "iterations": result.iterations, "model_iteration": final["iteration"],
               "stopped_early": int(result.selection.stopped)}
    # Throughput and the run's history: kept apart, so that `dvc exp show` leads with results.
    timing = {"train_seconds": round(result.seconds, 1),
              "train_images_per_s": round(result.images_per_s, 2),
              "resumed_from": result.resumed_from, "processes": processes}
    # At the last iteration: the runs table shows each metric's value at its last step.
    log_metrics({(stage.metric_prefix + k if k.startswith("val_") else k): float(v)
                 for k, v in (metrics | timing).items()}, result.iterations)
    save_model(files.model, model.cpu(), classes, stage=stage.name, val_miou=final["miou"],
               init=origin, iterations=result.iterations, model_iteration=final["iteration"],
               run_id=run_id, data_hash=data_hash, val_hash=files_hash([files.val_list]),
               git_commit=git_commit(), params=params.as_dict(), experiment=dvc_experiment())
    make_dirs(files.reports)
    write_csv(files.reports / "curve.csv", pd.DataFrame(result.history), index=False)
    write_csv(files.reports / "val_curve.csv", pd.DataFrame(val_curve), index=False)
    write_json(files.reports / "metrics.json", metrics)
    write_json(files.reports / "timing.json", timing)
    return metrics | timing


def kept_model(model: DeepLabV3Plus, result: TrainResult, keep: str,
               validate: Any) -> dict[str, Any]:
    """The validation of the weights the stage keeps, with `iteration` (whose weights they are)
    and `last_miou` (the last iteration's): the last iteration's, or with `keep: best` the best
    validation's (loaded into `model`) when it beats the last; with `ema`, of the averaged
    weights."""
    if result.ema is not None:  # keep: ema, or best of the average's validations
        model.load_state_dict(result.ema.weights())
    final = validate()
    final.update(iteration=result.iterations, last_miou=final["miou"])
    chosen = result.selection
    if keep == "best" and chosen.best_state is not None and chosen.best_miou > final["miou"]:
        model.load_state_dict(chosen.best_state)
        last = final["miou"]
        final = validate()
        final.update(iteration=chosen.best_iteration, last_miou=last)
        log.info("keep: best -> the weights of iteration %d (val mIoU %.4f; the last: %.4f)",
                 chosen.best_iteration, final["miou"], last)
    return final


def run_training_stage(stage: TrainingStage, params: Params, files: StageFiles) -> dict[str, Any]:
    """Train for one stage, validate on full images, write the model, curves and metrics.
    The class count and names come from the data (`files.classes`)."""
    import mlflow

    sched = getattr(params, stage.schedule)
    classes = read_classes(files.classes)
    torch.set_num_threads(params.runtime.threads or torch.get_num_threads())
    if stage == PRETRAIN and read_list(files.train_list).empty:
        return skip_pretraining(params, classes, files.model, files.reports, files.checkpoint)
    seed_everything(params.seed)  # the initialisation of new layers is part of the run
    start = initial_model(stage.schedule, params, len(classes), files.init, stage.partial_init)
    model, origin = start.model, start.origin
    dataset, val_rows, repeats = training_data(stage, params, files, model.mean)
    info, device = init_from_env(select_device(params.train.device))
    log.info("%s: %d training samples (%d hard repeats), init from %s, device %s, process %d of %d",
             stage.name, len(dataset), repeats, origin, device, info.rank + 1, info.world_size)
    fp = run_fingerprint(stage, params, files, dataset, start)
    weights = stage_class_weights(stage, sched, files, classes)

    resume = load_checkpoint(files.checkpoint, fingerprint(fp), sched.iterations)
    run = start_stage_run(stage.name, params, params.mlflow.experiment, files.data_files,
                          resume_run_id=resume.get("run_id") if resume else None,
                          splits={"train": files.train_list, "validation": files.val_list},
                          ablation=stage.ablation) if info.is_main else None
    spool = MetricSpool(run.info.run_id, spool_file(files.checkpoint), resumed=resume is not None) \
        if run else None

    def log_metrics(record: dict[str, float], it: int) -> None:
        if spool:
            spool.log(record, it)

    sweep = reporter(stage.name) if info.is_main else None  # a sweep's trial: report, prune

    def validate(m: torch.nn.Module, it: int) -> dict[str, float]:
        miou = evaluate(m, val_rows, len(classes), device, desc="val")["miou"]
        log_metrics({f"{stage.metric_prefix}val_miou": miou}, it)
        if sweep:
            sweep.report(miou, it)
        return {"val_miou": miou}

    status = "FAILED"
    try:
        if run:
            mlflow.set_tags({"init": origin, "processes": str(info.world_size),
                             **(sweep.tags() if sweep else {})})
            if weights is not None:
                mlflow.log_dict(dict(zip(classes.names, weights)), "class_weights.json")
        options = TrainOptions(files.checkpoint, params.seed, fp, device, info.rank,
                               info.world_size, resume, run.info.run_id if run else None,
                               on_log=lambda it, rec: log_metrics(rec, it),
                               on_validate=validate, class_weights=weights)
        if spool and resume is None and sched.val_every:
            # The starting weights' validation at step 0, the run's first metric: MLflow's
            # Compare plots the first metric a run logged, so it shows the val mIoU, not the
            # loss (train() seeds its own RNG: this changes no step of training).
            start_miou = evaluate(model.to(device), val_rows, len(classes), device, desc="val")["miou"]
            log_metrics({f"{stage.metric_prefix}val_miou": start_miou}, 0)
        result = train(model, dataset, sched, params.train, params.runtime, options)
        if not info.is_main:  # rank 0 alone validates and writes
            return {}
        final = kept_model(model, result, sched.keep,
                           lambda: evaluate(model, val_rows, len(classes), device, desc="val"))
        metrics = write_results(stage, params, files, model, classes, result, final, origin,
                                run.info.run_id, fp["data"], info.world_size, log_metrics)
        # The runs table shows names: each says its result without choosing columns.
        spool.set_tags({"mlflow.runName": f"{stage.name} · {'coco ' if stage.metric_prefix else ''}"
                                          f"{metrics['val_miou']:.3f}"})
        status = "FINISHED"
    except TrialPruned:
        status = "KILLED"
        if spool:
            spool.set_tags({"sweep.state": "PRUNED"})
        raise
    finally:
        try:
            if spool:
                end_run(spool, status, f"the model file {files.model} is written and whole")
        finally:
            shutdown()
    log.info("%s: val mIoU %.4f after %d iterations (%.1f img/s)", stage.name,
             metrics["val_miou"], result.iterations, result.images_per_s)
    return metrics
