"""A sweep worker: in the current clone, ask the shared study for a trial, run it as a DVC
experiment (`dvc exp run --temp` with the trial's `-S` values), read its metric, tell the
study, push the experiment, and repeat until the study has `sweep.trials` finished trials.

Several workers on several machines (each in its own clone, one storage, one MLflow tracking
server, one DVC remote) share the work: a trial is given to one worker only. A worker that
dies (`kill -9`) stops beating: after `grace_s` its trial is failed by the next worker that
asks for one, and run again (`retries` times). A trial whose `dvc exp run` fails (a bad value,
a diverged loss) fails with the reason as its `reason` attribute, and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, DeeplabError
from ..core.schema import SweepConfig
from .space import main_only, overrides, suggest
from .study import finished, open_study, running, storage_url, trial_env
from .trial import open_storage

log = logging.getLogger(__name__)


class ExperimentFailed(DeeplabError):
    """A trial's `dvc exp run` failed (not pruned): the trial fails with this reason."""


class StorageAway(DeeplabError):
    """The study's storage did not answer for longer than `sweep.storage_wait_s`."""


def _git(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check)


def experiment_ref(name: str, cwd: Path) -> str | None:
    """The git ref of the experiment called `name` (DVC keeps them under refs/exps/)."""
    refs = _git(["for-each-ref", "--format=%(refname)", "refs/exps/"], cwd).stdout.split()
    found = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    return found[-1] if found else None


def read_metric(ref: str, metric: str, cwd: Path) -> float:
    """`metric` of `reports/metrics.json` as the experiment committed it."""
    shown = _git(["show", f"{ref}:reports/metrics.json"], cwd, check=False)
    if shown.returncode:
        raise ExperimentFailed(f"experiment {ref}: no reports/metrics.json")
    value = json.loads(shown.stdout).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ExperimentFailed(f"experiment {ref}: reports/metrics.json has no number {metric!r} "
                               f"(sweep.metric)")
    return float(value)


def stages_run(output: str) -> list[str]:
    """The stages a `dvc exp run` ran, in order (its "Running stage 'x':" lines)."""
    return re.findall(r"^Running stage '([^']+)':", output, re.M)


def last_error(output: str) -> str:
    """The line a failed `dvc exp run` ends on that says why (a stage's `error:` line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:500]


class Worker:
    """One worker of the study `cfg.study`, running trials in the clone at `repo`."""

    def __init__(self, cfg: SweepConfig, raw: dict[str, Any], repo: Path) -> None:
        self.cfg, self.raw, self.repo = cfg, raw, repo
        self.url = storage_url(cfg)
        self.host = socket.gethostname()
        self.dropped = main_only(raw, cfg)
        self.storage = self._wait(lambda: open_storage(self.url, cfg), "open")
        self.study = self._wait(lambda: open_study(cfg, self.storage), "open the study")
        self.study_run = study_run(cfg, self.url)

    def _wait(self, call, what: str) -> Any:
        """`call()`, waiting up to `storage_wait_s` while the storage does not answer (one
        line when it goes away, one when it answers again); StorageAway after that."""
        from sqlalchemy.exc import SQLAlchemyError

        started = None
        while True:
            try:
                result = call()
                if started is not None:
                    log.warning("sweep storage answers again after %.0f s", time.time() - started)
                return result
            except SQLAlchemyError as exc:
                now = time.time()
                if started is None:
                    started = now
                    log.warning("sweep storage %s does not answer (%s); waiting up to %.0f s",
                                _shown(self.url), type(exc).__name__, self.cfg.storage_wait_s)
                if now - started > self.cfg.storage_wait_s:
                    raise StorageAway(f"sweep storage {_shown(self.url)} did not answer for "
                                      f"{self.cfg.storage_wait_s:.0f} s (to {what}); a trial this "
                                      f"worker had begun is run again by another worker") from None
                time.sleep(min(5.0, max(0.5, self.cfg.storage_wait_s / 20)))

    def objective(self, trial: Any) -> float:
        import optuna

        values = suggest(trial, self.cfg)
        name = f"{self.cfg.study}-{trial.number}"
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("experiment", name)
        env = {**os.environ, **trial_env(self.url, self.cfg, trial, self.study_run)}
        args = ["dvc", "exp", "run", "--temp", "--name", name, *overrides(values, self.dropped)]
        log.info("trial %d: %s", trial.number, " ".join(args[5:]))
        started = time.time()
        proc = subprocess.run(args, cwd=self.repo, env=env, capture_output=True, text=True)
        trial.set_user_attr("seconds", round(time.time() - started, 1))
        stages = stages_run(proc.stdout + proc.stderr)
        trial.set_user_attr("stages", stages)
        log.info("trial %d: dvc exp run exited %d after %.0f s; stages run: %s", trial.number,
                 proc.returncode, time.time() - started, ", ".join(stages) or "none")
        if proc.returncode:
            frozen = self.storage.get_trial(trial._trial_id)
            if "pruned_at" in frozen.user_attrs:
                self._state(trial.number, "PRUNED")
                raise optuna.TrialPruned(f"trial {trial.number} pruned at iteration "
                                         f"{frozen.user_attrs['pruned_at']}")
            reason = last_error(proc.stdout + "\n" + proc.stderr)
            trial.set_user_attr("reason", reason)
            self._state(trial.number, "FAIL")
            raise ExperimentFailed(f"trial {trial.number}: dvc exp run failed: {reason}")
        ref = experiment_ref(name, self.repo)
        if ref is None:
            raise ExperimentFailed(f"trial {trial.number}: dvc exp run left no experiment {name}")
        value = read_metric(ref, self.cfg.metric, self.repo)
        self._push(name)
        self._state(trial.number, "COMPLETE", value)
        return value

    def _push(self, name: str) -> None:
        """The experiment to the clone's git remote and its outputs to the DVC remote, so any
        clone can `dvc exp pull` it (skipped, with a line, in a clone without `origin`)."""
        if _git(["remote"], self.repo).stdout.split().count("origin") == 0:
            log.warning("no git remote 'origin': experiment %s stays in this clone", name)
            return
        pushed = subprocess.run(["dvc", "exp", "push", "origin", name], cwd=self.repo,
                                capture_output=True, text=True)
        if pushed.returncode:
            log.warning("dvc exp push origin %s failed: %s", name, last_error(pushed.stderr))

    def _state(self, number: int, state: str, value: float | None = None) -> None:
        """The trial's state on its pipeline run in MLflow (tag `sweep.state`)."""
        try:
            tag_trial_runs(self.cfg.study, number, state, value)
        except Exception as exc:  # noqa: BLE001 - tracking is a record, not the sweep
            log.warning("trial %d: MLflow tags not set (%s)", number, str(exc).splitlines()[0][:200])

    def run(self, target: int) -> int:
        """Trials until the study has `target` finished ones; how many this worker ran."""

        ran = 0
        while True:
            busy = self._wait(lambda: running(self.study), "count the trials")
            done = self._wait(lambda: len(finished(self.study)), "count the trials")
            if done >= target or (done + busy >= target and busy):
                if done < target:  # the last trials are running elsewhere: wait for them
                    time.sleep(min(10, self.cfg.heartbeat_s))
                    continue
                break
            self._wait(lambda: self.study.optimize(self.objective, n_trials=1,
                                                   catch=(ExperimentFailed,)), "run a trial")
            ran += 1
        log_study_figures(self.study, self.study_run, self.cfg)
        return ran


def _shown(url: str) -> str:
    """A storage URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url.split("@")[-1]


def study_run(cfg: SweepConfig, url: str) -> str | None:
    """The study's parent run in MLflow (made by its first worker): the trials' pipeline runs
    nest under it, so Compare shows the sweep."""
    from mlflow import MlflowClient

    from ..core.config import load_params
    from ..tracking.store import setup

    try:
        experiment = load_params(sections=("mlflow",)).mlflow.experiment
        mlflow = setup(experiment)
        client = MlflowClient()
        experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
        query = f"tags.`sweep.study` = '{cfg.study}' and tags.`sweep.parent` = 'true'"

        def first() -> str | None:  # the earliest parent run: the one every worker agrees on
            runs = client.search_runs([experiment_id], filter_string=query, max_results=50)
            runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
            return runs[0].info.run_id if runs else None

        found = first()
        if found:
            return found
        run = client.create_run(experiment_id, run_name=f"sweep {cfg.study}", tags={
            "sweep.study": cfg.study, "sweep.parent": "true", "sweep.storage": _shown(url),
            "sweep.metric": cfg.metric, "sweep.direction": cfg.direction})
        for key, spec in cfg.space.items():
            client.log_param(run.info.run_id, f"space.{key}", str(spec if isinstance(spec, list)
                                                                   else spec.model_dump()))
        chosen = first()
        if chosen != run.info.run_id:  # another worker made one at the same time: keep its
            client.delete_run(run.info.run_id)
        return chosen
    except Exception as exc:  # noqa: BLE001 - the sweep runs without its MLflow record
        log.warning("MLflow study run not made (%s)", str(exc).splitlines()[0][:200])
        return None


def tag_trial_runs(study: str, number: int, state: str, value: float | None) -> None:
    """`sweep.state` (and the trial's value) on the pipeline run of trial `number`."""
    from mlflow import MlflowClient

    from ..core.config import load_params
    from ..tracking.store import setup

    mlflow = setup(load_params(sections=("mlflow",)).mlflow.experiment)
    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name(load_params(sections=("mlflow",)).mlflow.experiment)
    for run in client.search_runs([experiment.experiment_id], filter_string=(
            f"tags.`sweep.study` = '{study}' and tags.`sweep.trial` = '{number}'")):
        client.set_tag(run.info.run_id, "sweep.state", state)
        if value is not None and run.data.tags.get("pipeline.parent") == "true":
            client.log_metric(run.info.run_id, "sweep.value", value)
        if run.data.tags.get("pipeline.parent") == "true" and run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FINISHED" if state == "COMPLETE" else "KILLED")


def log_study_figures(study: Any, run_id: str | None, cfg: SweepConfig) -> None:
    """The optimization history and parameter importances as PNGs on the study's run
    (Optuna's matplotlib plots: no script, nothing from the network)."""
    if run_id is None:
        return
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    from mlflow import MlflowClient
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        figures = {"optimization_history.png": plots.plot_optimization_history}
        if len(complete) > 1 and len(cfg.space) > 1:
            figures["param_importances.png"] = plots.plot_param_importances
        for name, draw in figures.items():
            try:
                axes = draw(study)
                axes.figure.savefig(Path(tmp) / name, dpi=100, bbox_inches="tight")
                client.log_artifact(run_id, str(Path(tmp) / name))
            except Exception as exc:  # noqa: BLE001 - a figure is a record, not the sweep
                log.warning("%s not drawn (%s)", name, str(exc).splitlines()[0][:200])
        best = study.best_trial
        client.log_metric(run_id, f"best_{cfg.metric}", best.value)
        client.set_tag(run_id, "sweep.best_trial", str(best.number))


def run_worker(cfg: SweepConfig, raw: dict[str, Any], trials: int | None) -> int:
    """`python -m deeplab.sweep run`: this clone's worker until the study is done."""
    from .space import check_space

    check_space(raw, cfg)
    repo = Path.cwd()
    if not (repo / "dvc.yaml").is_file():
        raise ConfigError(f"{repo}: no dvc.yaml here; run the sweep from the repository's root")
    worker = Worker(cfg, raw, repo)
    ran = worker.run(trials or cfg.trials)
    print(f"sweep {cfg.study}: this worker ran {ran} trial(s); "
          f"{len(finished(worker.study))} finished in the study", file=sys.stdout)
    return 0
