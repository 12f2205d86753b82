"""Sweeps across machines: an Optuna study of DVC experiments on a real PostgreSQL server,
workers in their own clones of one bare git repository with one DVC directory remote (two
machines on one), and a worker killed with `kill -9`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import postgres, servers
from helpers.repo import BIN, GIT, copy_of, run

def _publish(origin: Path, sweep: dict, folder: Path) -> None:
    """The study's `sweep:` section committed and pushed to the team's git remote (what its
    owner does once, before the machines clone)."""
    run(["git", "clone", "-q", str(origin), str(folder)], folder.parent)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["sweep"] = sweep
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "commit", "-qam", "sweep settings"], folder, env=GIT)
    run(["git", "push", "-q", "origin", "HEAD"], folder, env=GIT)


def _clone(origin: Path, folder: Path) -> Path:
    """One machine: a clone of the team's git remote with the outputs from its DVC remote."""
    run(["git", "clone", "-q", str(origin), str(folder)], folder.parent)
    run(["dvc", "pull", "-q"], folder)
    return folder


def _worker(clone: Path, tracking: str, trials: int | None = None) -> subprocess.Popen:
    """`python -m deeplab.sweep run` in `clone`, its output in `clone/../<name>.log` (a file:
    a pipe nobody reads while another worker is awaited would fill and block it)."""
    # one core each, as two one-core machines (two workers' stages at 2 threads each on 2 cores
    # spin against each other many times slower)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(clone / "src"),
           "MLFLOW_TRACKING_URI": tracking, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "deeplab.sweep", "run"] + (["--trials", str(trials)] if trials else [])
    log = clone.parent / f"{clone.name}.log"
    with open(log, "w") as out:
        proc = servers.start(args, env=env, cwd=clone, stdout=out, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _finish(workers: list[subprocess.Popen], timeout: float) -> list[str]:
    """Wait for every worker (killing all past `timeout` s); their outputs."""
    deadline = time.time() + timeout
    for w in workers:
        try:
            w.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for other in workers:
                servers.stop(other, timeout=5)
            raise AssertionError("workers still running after %.0f s:\n%s" % (timeout, "\n\n".join(
                o.log.read_text()[-6000:] for o in workers))) from None
    return [w.log.read_text() for w in workers]


@pytest.fixture
def machines(finished, tmp_path):
    from helpers.models import free_port

    work = copy_of(finished, tmp_path)
    remote, origin = tmp_path / "dvc-remote", tmp_path / "origin.git"
    run(["dvc", "remote", "add", "-d", "team", str(remote)], work)
    run(["dvc", "push", "-q"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "team remote"], work, env=GIT)
    run(["git", "clone", "-q", "--bare", str(work), str(origin)], tmp_path)
    url, stop_db = postgres.start()
    port = free_port()
    server = servers.mlflow_server(tmp_path / "mlflow", port)
    try:
        yield work, origin, remote, url, f"http://127.0.0.1:{port}"
    finally:
        servers.stop(server)
        stop_db()


SPACE = {"rank.threshold": [0.3, 0.5, 0.7, 0.9]}  # cheap trials: rank alone reruns


@pytest.mark.slow
def test_two_machines_share_a_study_then_any_clone_pulls_the_best(machines, tmp_path):
    """Two workers in two clones finish 4 trials between them with none run twice; every
    trial is a DVC experiment pushed to the shared remotes; a third clone `dvc exp pull`s the
    best and its metric is the study's; MLflow nests the trials under the study's run."""
    import optuna
    from mlflow import MlflowClient

    work, origin, remote, url, tracking = machines
    sweep = {"study": "team", "storage": url, "metric": "miou", "trials": 4, "sampler": "grid",
             "pruner": "none", "seed": 0, "heartbeat_s": 2, "grace_s": 8, "space": SPACE}
    _publish(origin, sweep, tmp_path / "owner")
    clones = [_clone(origin, tmp_path / name) for name in ("a", "b")]
    workers = [_worker(clone, tracking) for clone in clones]
    outputs = _finish(workers, 900)
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out[-4000:]
    study = optuna.load_study(study_name="team", storage=url)
    trials = study.get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and len(trials) == 4
    assert sorted(t.params["rank.threshold"] for t in done) == [0.3, 0.5, 0.7, 0.9]  # none twice
    hosts = {t.user_attrs["host"] for t in done}
    assert hosts and all(t.user_attrs["experiment"] == f"team-{t.number}" for t in done)
    assert sum("this worker ran" in out for out in outputs) == 2

    # A third clone sees every trial's experiment and pulls the best.
    third = tmp_path / "c"
    run(["git", "clone", "-q", str(origin), str(third)], tmp_path)
    listed = run(["dvc", "exp", "list", "origin", "--name-only"], third).stdout.split()
    assert sorted(listed) == sorted(f"team-{t.number}" for t in done)
    best = study.best_trial
    run(["dvc", "exp", "pull", "origin", f"team-{best.number}"], third)
    run(["dvc", "exp", "apply", f"team-{best.number}"], third)
    metrics = json.loads((third / "reports/metrics.json").read_text())
    assert metrics["miou"] == best.value
    assert yaml.safe_load((third / "params.yaml").read_text())["rank"]["threshold"] == \
        best.params["rank.threshold"]

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("deeplabv3plus").experiment_id
    parent = client.search_runs([experiment], filter_string="tags.`sweep.parent` = 'true'")
    assert len(parent) == 1 and parent[0].data.tags["sweep.study"] == "team"
    pipelines = client.search_runs([experiment], filter_string=(
        "tags.`sweep.study` = 'team' and tags.`pipeline.parent` = 'true'"))
    assert sorted(int(r.data.tags["sweep.trial"]) for r in pipelines) == sorted(t.number for t in done)
    assert {r.data.tags["sweep.state"] for r in pipelines} == {"COMPLETE"}
    assert {r.data.tags["mlflow.parentRunId"] for r in pipelines} == {parent[0].info.run_id}
    artifacts = {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    assert "optimization_history.png" in artifacts

    shown = run([sys.executable, "-m", "deeplab.sweep", "show"], clones[0],
                env={"MLFLOW_TRACKING_URI": tracking}).stdout
    assert shown.splitlines()[0].split("\t") == ["trial", "rank.threshold", "miou", "state",
                                                 "seconds", "host"]
    assert f"best: trial {best.number}" in shown


@pytest.mark.slow
def test_a_worker_killed_mid_trial_has_its_trial_run_again_by_another(machines, tmp_path):
    """`kill -9` of a worker (and its experiment) mid-trial: after the grace period its trial
    is failed and run again by the other worker, which finishes the study; nothing finished
    is run again."""
    import optuna

    work, origin, remote, url, tracking = machines
    sweep = {"study": "dies", "storage": url, "trials": 2, "sampler": "grid", "pruner": "none",
             "seed": 0, "heartbeat_s": 1, "grace_s": 4, "retries": 1, "space": SPACE}
    _publish(origin, sweep, tmp_path / "owner")
    a, b = (_clone(origin, tmp_path / name) for name in ("a", "b"))
    doomed = _worker(a, tracking)
    deadline = time.time() + 600
    while time.time() < deadline:  # until its first trial runs
        try:
            study = optuna.load_study(study_name="dies", storage=url)
            if any(t.state.name == "RUNNING" for t in study.get_trials()):
                break
        except Exception:  # noqa: BLE001 - the study does not exist yet
            pass
        assert doomed.poll() is None, doomed.log.read_text()
        time.sleep(0.5)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    survivor = _worker(b, tracking)
    out = _finish([survivor], 900)[0]
    assert survivor.returncode == 0, out[-4000:]
    trials = optuna.load_study(study_name="dies", storage=url).get_trials()
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"], [(t.number, t.state, t.params) for t in trials]
    dead = next(t for t in trials if t.state.name == "FAIL")
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == dead.number)
    assert retry.state.name == "COMPLETE" and retry.params == dead.params  # the same trial, again
    assert len({t.params["rank.threshold"] for t in trials if t.state.name == "COMPLETE"}) == 2
