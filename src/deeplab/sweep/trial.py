"""What a trial's own processes need (the training stages and their MLflow runs): whether this
process runs under a sweep, the study's storage and its pruner. Nothing here reads `params.yaml`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.schema import SweepConfig

# What a trial's stages read from their environment (never a DVC dependency: no stage's
# outputs depend on whether it ran under a sweep).
ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_PRUNER = ("DEEPLAB_SWEEP_STORAGE", "DEEPLAB_SWEEP_STUDY",
                                                 "DEEPLAB_SWEEP_TRIAL", "DEEPLAB_SWEEP_PRUNER")
ENV_NUMBER, ENV_RUN = "DEEPLAB_SWEEP_NUMBER", "DEEPLAB_SWEEP_RUN"  # the trial's number, the study's run


def open_storage(url: str, cfg: SweepConfig | None = None) -> Any:
    """Optuna's RDB storage at `url`; with `cfg`, heartbeats every `heartbeat_s` and a trial
    whose worker stopped beating for `grace_s` failed and retried `retries` times."""
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options: dict[str, Any] = {}
    if cfg is not None:
        options = {"heartbeat_interval": cfg.heartbeat_s, "grace_period": cfg.grace_s,
                   "failed_trial_callback": RetryFailedTrialCallback(max_retry=cfg.retries)}
    engine = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine["connect_args"] = {"timeout": 60}
    return RDBStorage(url, engine_kwargs=engine, **options)


def pruner(name: str) -> Any:
    """`none`, `median` (a trial below the median of the others at the same step, after the
    first finished trial) or `hyperband`."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def in_sweep() -> dict[str, str] | None:
    """The sweep context of this process (set by the worker), or None outside a sweep."""
    if not os.environ.get(ENV_STUDY):
        return None
    return {k: os.environ.get(k, "") for k in (ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_PRUNER,
                                               ENV_NUMBER, ENV_RUN)}
