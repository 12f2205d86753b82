"""The Optuna study a sweep's workers share: its storage (an SQLite file beside the repository
for one machine, PostgreSQL for many), sampler and pruner, which trials count as finished,
and the study's parent run in MLflow."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..core.schema import SweepConfig

log = logging.getLogger(__name__)
LOCAL_STORE = "optuna.db"  # beside the repository (like mlflow.db), for one machine

# What a trial's stages read from their environment (never a DVC dependency: no stage's
# outputs depend on whether it ran under a sweep).
ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_PRUNER = ("DEEPLAB_SWEEP_STORAGE", "DEEPLAB_SWEEP_STUDY",
                                                 "DEEPLAB_SWEEP_TRIAL", "DEEPLAB_SWEEP_PRUNER")
ENV_NUMBER, ENV_RUN = "DEEPLAB_SWEEP_NUMBER", "DEEPLAB_SWEEP_RUN"  # the trial's number, the study's run


def storage_url(cfg: SweepConfig) -> str:
    """The study's SQLAlchemy URL: `sweep.storage`, or the SQLite file beside the repository."""
    if cfg.storage:
        return cfg.storage
    from ..tracking.store import repo_root

    return f"sqlite:///{repo_root() / LOCAL_STORE}"


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


def sampler(cfg: SweepConfig) -> Any:
    import optuna

    from .space import grid

    if cfg.sampler == "grid":
        return optuna.samplers.GridSampler(grid(cfg), seed=cfg.seed)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    return optuna.samplers.TPESampler(seed=cfg.seed)


def pruner(name: str) -> Any:
    """`none`, `median` (a trial below the median of the others at the same step, after the
    first finished trial) or `hyperband`."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(cfg: SweepConfig, storage: Any) -> Any:
    import optuna

    return optuna.create_study(study_name=cfg.study, storage=storage, sampler=sampler(cfg),
                               pruner=pruner(cfg.pruner), direction=cfg.direction,
                               load_if_exists=True)


def finished(study: Any) -> list[Any]:
    """The trials that count toward `sweep.trials`: complete, pruned, or failed for good (a
    failure of a dead worker is retried: its retry counts, not it)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and t.number not in retried
                and "reason" in t.user_attrs)]


def running(study: Any) -> int:
    """Trials running now (a dead worker's trial fails first, and its retry waits)."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    fail_stale_trials(study)
    return sum(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def trial_env(url: str, cfg: SweepConfig, trial: Any, study_run: str | None) -> dict[str, str]:
    """The environment that makes a trial's finetune stage report to its trial and nests its
    pipeline run under the study's run in MLflow."""
    return {ENV_STORAGE: url, ENV_STUDY: cfg.study, ENV_TRIAL: str(trial._trial_id),
            ENV_NUMBER: str(trial.number), ENV_PRUNER: cfg.pruner, ENV_RUN: study_run or ""}


def in_sweep() -> dict[str, str] | None:
    """The sweep context of this process (set by the worker), or None outside a sweep."""
    if not os.environ.get(ENV_STUDY):
        return None
    return {k: os.environ.get(k, "") for k in (ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_PRUNER,
                                               ENV_NUMBER, ENV_RUN)}
