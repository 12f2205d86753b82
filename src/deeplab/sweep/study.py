"""The Optuna study a sweep's workers share: its storage (an SQLite file beside the repository
for one machine, PostgreSQL for many), sampler and pruner, which trials count as finished,
and the study's parent run in MLflow."""

from __future__ import annotations

import logging
from typing import Any

from ..core.schema import SweepConfig
from .trial import (
    ENV_NUMBER,
    ENV_PRUNER,
    ENV_RUN,
    ENV_STORAGE,
    ENV_STUDY,
    ENV_TRIAL,
    pruner,
)

log = logging.getLogger(__name__)
LOCAL_STORE = "optuna.db"  # beside the repository (like mlflow.db), for one machine


def storage_url(cfg: SweepConfig) -> str:
    """The study's SQLAlchemy URL: `sweep.storage`, or the SQLite file beside the repository."""
    if cfg.storage:
        return cfg.storage
    from ..tracking.store import repo_root

    return f"sqlite:///{repo_root() / LOCAL_STORE}"


def sampler(cfg: SweepConfig) -> Any:
    import optuna

    from .space import grid

    if cfg.sampler == "grid":
        return optuna.samplers.GridSampler(grid(cfg), seed=cfg.seed)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    return optuna.samplers.TPESampler(seed=cfg.seed)


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
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    with warnings.catch_warnings():  # Optuna marks it experimental: not the user's concern
        warnings.simplefilter("ignore", ExperimentalWarning)
        fail_stale_trials(study)
    return sum(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def trial_env(url: str, cfg: SweepConfig, trial: Any, study_run: str | None) -> dict[str, str]:
    """The environment that makes a trial's finetune stage report to its trial and nests its
    pipeline run under the study's run in MLflow."""
    return {ENV_STORAGE: url, ENV_STUDY: cfg.study, ENV_TRIAL: str(trial._trial_id),
            ENV_NUMBER: str(trial.number), ENV_PRUNER: cfg.pruner, ENV_RUN: study_run or ""}
