"""The training loop used by both pretrain and finetune.

SGD + momentum with the "poly" schedule, weight decay on conv and linear weights only (not
on BN parameters and biases, as the reference), cross-entropy (ignore 255) on logits at the
label size, BN trained or frozen (`freeze_bn`). Checkpoints every `checkpoint_every`
iterations hold model, optimizer, scheduler, grad scaler, RNG states, the iteration and the
MLflow run id, as tensors and plain data only (read back with `weights_only=True`); a run
restarted with the same settings resumes from its checkpoint and ends with the same weights.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..core.errors import DeeplabError, TrainingDivergedError
from ..core.io import save_torch
from ..core.schema import RuntimeConfig, Schedule, TrainConfig
from ..data.dataset import IterationSampler, SegmentationDataset
from ..model.device import select_device, train_precision
from .checkpoints import fingerprint, load_checkpoint, rng_state, set_rng_state
from .distributed import all_sum, synchronize_batchnorm
from .ema import WeightAverage
from .losses import Objective
from .optim import sgd_with_poly_schedule

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_train_mode(model: nn.Module, freeze_bn: bool = False) -> None:
    """Training mode; with `freeze_bn`, every BN keeps its statistics and affine parameters
    (eval mode, no gradients), as in the reference's second training stage."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
                m.requires_grad_(False)


@dataclass
class Selection:
    """Which weights a run keeps and when it stops, from its validation mIoU: with `keep_best`
    the weights of the best validation (an improvement is more than `min_delta`); with
    `patience`, training stops after that many validations without one. Checkpointed, so a
    killed run keeps its best weights and resumes the same."""

    keep_best: bool = False
    patience: int | None = None
    min_delta: float = 0.0
    best_miou: float = float("-inf")
    best_iteration: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    waits: int = 0
    stopped: bool = False

    @classmethod
    def of(cls, sched: Schedule) -> "Selection":
        stop = sched.early_stop
        return cls(sched.keep == "best", stop.patience if stop else None,
                   stop.min_delta if stop else 0.0)

    def observe(self, miou: float, iteration: int, model: nn.Module) -> None:
        """Record a validation; keep the weights if they are the best so far."""
        if miou > self.best_miou + self.min_delta:
            self.best_miou, self.best_iteration, self.waits = miou, iteration, 0
            if self.keep_best:
                self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            self.waits += 1
        self.stopped = self.patience is not None and self.waits >= self.patience

    def state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("best_miou", "best_iteration", "best_state",
                                               "waits", "stopped")}

    def restore(self, state: dict[str, Any] | None) -> None:
        for key, value in (state or {}).items():
            setattr(self, key, value)


@dataclass
class TrainResult:
    iterations: int
    resumed_from: int
    seconds: float
    images_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)
    selection: Selection = field(default_factory=Selection)
    ema: WeightAverage | None = None  # the weight average (`ema`), when the schedule keeps one


def averaged(model: nn.Module, ema: WeightAverage | None) -> nn.Module:
    """`model` itself, or with a weight average a copy of it holding the averaged weights."""
    if ema is None or ema.state is None:
        return model
    import copy

    copied = copy.deepcopy(model)
    copied.load_state_dict(ema.state)
    return copied


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def global_batch_loss(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                      labels: torch.Tensor, amp_dtype: torch.dtype | None,
                      objective: Objective = Objective(), iteration: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective (cross-entropy by default, ignore 255) on logits upsampled to the label
    size, under autocast.

    Returns the loss to backpropagate, which is the loss of the global batch (the same on
    every process; DDP's gradient averaging then gives its gradient, see `losses`), and its
    detached value.
    """
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(images)
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear",
                                   align_corners=True)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        loss = objective(logits, labels, iteration)
        return loss, loss.detach()


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   scheduler: Any, clip_grad_norm: float | None = None) -> float | None:
    """After the backward passes: gradient clipping (unscaled first under fp16), SGD step,
    scaler and LR schedule updates. Returns the gradients' norm before clipping (None when
    there is no clipping)."""
    norm = None
    if clip_grad_norm is not None:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip_grad_norm))
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return norm


FROM_FILE: Any = object()  # TrainOptions.resume default: read the checkpoint file


@dataclass
class TrainOptions:
    """Where a run keeps its state and whom it reports to (how it trains is the schedule).

    `fingerprint` holds the settings a checkpoint must have been written with to be resumed;
    `resume` is the state `load_checkpoint` returned (read from `checkpoint` if left as
    `FROM_FILE`); `run_id` (the MLflow run) is stored in each checkpoint so that a resumed
    stage continues the same run. `on_log(iteration, record)` receives every logged record and
    `on_validate(model, iteration)` runs every `val_every` iterations, on rank 0.
    """

    checkpoint: Path
    seed: int
    fingerprint: dict[str, Any] = field(default_factory=dict)
    device: torch.device | None = None
    rank: int = 0
    world_size: int = 1
    resume: dict[str, Any] | None = FROM_FILE
    run_id: str | None = None
    on_log: Callable[[int, dict[str, float]], None] | None = None
    on_validate: Callable[[nn.Module, int], dict[str, float]] | None = None
    class_weights: list[float] | None = None


def train(model: nn.Module, dataset: SegmentationDataset, sched: Schedule, settings: TrainConfig,
          runtime: RuntimeConfig, options: TrainOptions) -> TrainResult:
    """Train `model` for `sched.iterations` iterations, resuming from the checkpoint if it
    matches.

    `settings` says how (device, AMP, channels_last, compile); `runtime` holds what cannot
    change the weights (loader workers, log interval); `options` the run's state and hooks.
    """
    checkpoint, seed, rank, world_size = (options.checkpoint, options.seed, options.rank,
                                          options.world_size)
    on_log, on_validate, run_id = options.on_log, options.on_validate, options.run_id
    device = options.device or select_device(settings.device)
    total = sched.iterations
    freeze_bn = sched.freeze_bn
    precision = train_precision(settings.amp, settings.channels_last, device)
    channels_last = precision.channels_last
    seed_everything(seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if world_size > 1:  # first: the synchronized BN modules are new modules to freeze
        model = synchronize_batchnorm(model, device)
    set_train_mode(model, freeze_bn)  # frozen BN parameters stay out of the optimizer
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    param_dtype = next(model.parameters()).dtype  # float32; float64 in exactness tests
    optimizer, scheduler = sgd_with_poly_schedule(model, sched)
    amp_dtype = precision.dtype
    scaler = torch.amp.GradScaler("cuda", enabled=precision.amp == "fp16")
    if rank == 0:
        log.info("training on %s: %s autocast, channels_last %s", device,
                 precision.amp if amp_dtype else "no (fp32)", channels_last)

    objective = Objective(sched.loss, options.class_weights, sched.top_k_percent_pixels,
                          sched.hard_example_mining_step)
    key = fingerprint(options.fingerprint)
    resume = options.resume
    if resume is FROM_FILE:
        resume = load_checkpoint(checkpoint, key, total)
    start = 0
    history: list[dict[str, float]] = []
    val_history: list[dict[str, float]] = []
    selection = Selection.of(sched)
    ema = WeightAverage(sched.ema.decay, sched.ema.every) if sched.ema else None
    if resume is not None:
        unwrap(model).load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        set_rng_state(resume["rng"])
        start = resume["iteration"]
        history = list(resume.get("history", []))
        val_history = list(resume.get("val_history", []))
        selection.restore(resume.get("selection"))
        if ema is not None:
            ema.restore(resume.get("ema"))
        log.info("resuming from %s at iteration %d", checkpoint, start)
    saved = start

    def save(iteration: int) -> None:
        nonlocal saved
        if rank != 0:
            return
        state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "rng": rng_state(), "iteration": iteration, "fingerprint": key,
                 "history": history, "val_history": val_history, "run_id": run_id,
                 "selection": selection.state(), "ema": ema.checkpoint() if ema else None}
        save_torch(checkpoint, state)
        saved = iteration

    k = sched.accumulate  # micro-batches of batch_size per optimizer step
    sampler = IterationSampler(len(dataset), sched.batch_size, total * k, seed, start * k, rank,
                               world_size)
    # Its own generator: the loader must not draw from the global RNG that checkpoints restore.
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=runtime.workers,
                        pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(seed))
    step_fn = torch.compile(model) if settings.compile and device.type == "cuda" else model
    set_train_mode(model, freeze_bn)
    t0 = time.perf_counter()
    seen = 0
    bar = tqdm(total=total, initial=start, desc="train", unit="it", disable=rank != 0,
               dynamic_ncols=True)
    it = start
    micro: list[tuple[torch.Tensor, torch.Tensor]] = []
    for images, labels in ([] if selection.stopped else loader):
        micro.append((images, labels))
        if len(micro) < k:
            continue
        steps, micro = micro, []
        shares = objective.shares([y for _, y in steps]) if k > 1 else [1.0]
        optimizer.zero_grad(set_to_none=True)
        global_loss = torch.zeros((), device=device, dtype=torch.float64)
        for m, (images, labels) in enumerate(steps):
            images = images.to(device, non_blocking=True).to(param_dtype).div_(255)
            labels = labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            # DDP all-reduces the gradients once per step: after the last micro-batch
            sync = model.no_sync() if world_size > 1 and m < k - 1 else contextlib.nullcontext()
            with sync:
                loss, value = global_batch_loss(step_fn, images, labels, amp_dtype, objective, it)
                if not torch.isfinite(value):
                    bar.close()
                    raise TrainingDivergedError(
                        f"loss is {value.item()} at iteration {it + 1}; the last good checkpoint "
                        f"({checkpoint}, iteration {saved}) is kept. Lower the learning rate or "
                        f"check the data")
                scaler.scale(loss if k == 1 else loss * shares[m]).backward()
            global_loss += value.double() * shares[m] if k > 1 else value.double()
            seen += images.shape[0] * world_size
        grad_norm = optimizer_step(optimizer, scaler, scheduler, sched.clip_grad_norm)
        if ema is not None:
            ema.update(unwrap(model), it + 1)
        it += 1
        speed = seen / (time.perf_counter() - t0)
        record = {"loss": float(global_loss), "lr": optimizer.param_groups[0]["lr"],
                  "images_per_s": speed}
        if grad_norm is not None:
            record["grad_norm"] = grad_norm  # before clipping
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}", img_s=f"{speed:.1f}")
        bar.update(1)
        if it % runtime.log_every == 0 or it == total:
            history.append({"iteration": it, **record})
            if on_log and rank == 0:
                on_log(it, record)
        if on_validate and sched.val_every and it % sched.val_every == 0 and it < total:
            if rank == 0:
                validated = averaged(unwrap(model), ema)  # with ema: the average is validated
                try:
                    val_history.append({"iteration": it, **on_validate(validated, it)})
                except DeeplabError:  # e.g. a sweep's pruner: stopped here, this state kept
                    save(it)
                    bar.close()
                    raise
                selection.observe(val_history[-1]["val_miou"], it, validated)
                set_train_mode(model, freeze_bn)
            if world_size > 1:  # every process stops where rank 0 decided to
                selection.stopped = bool(all_sum(torch.tensor(float(selection.stopped),
                                                              device=device)).item())
        if it % sched.checkpoint_every == 0 or it == total or selection.stopped:
            save(it)
        if selection.stopped:
            log.info("early stop at iteration %d: no val mIoU gain above %g in %d validations "
                     "(best %.4f at iteration %d)", it, selection.min_delta, selection.patience,
                     selection.best_miou, selection.best_iteration)
        if it >= total or selection.stopped:
            break
    bar.close()
    seconds = time.perf_counter() - t0
    return TrainResult(it, start, seconds, seen / seconds if seconds else 0.0, history, val_history,
                       selection, ema)
