"""The runs of one `dvc repro` / `dvc exp run`: a parent run per pipeline, one nested run per
stage with its settings, data inputs and DVC context, and the runs of killed processes ended."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from ..core.config import flatten
from ..core.hashing import files_hash
from ..core.schema import Params
from ..sweep.trial import in_sweep
from .store import repo_root, setup


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=repo_root())
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_experiment() -> str:
    """The name of the `dvc exp run` this process belongs to, or 'workspace'."""
    return os.environ.get("DVC_EXP_NAME") or "workspace"


def log_split_inputs(splits: dict[str, str | Path]) -> None:
    """Log split lists as the active run's dataset inputs (`{context: list file}`): name,
    digest (the hash of the list, which carries a content hash of every image) and
    size, so that the runs table's Dataset column shows what each run trained on."""
    import mlflow
    import pandas as pd

    for context, path in splits.items():
        rows = pd.read_csv(path, dtype=str)
        dataset = mlflow.data.from_pandas(rows, source=str(path), name=Path(path).stem,
                                          digest=files_hash([path]))
        mlflow.log_input(dataset, context=context)
        mlflow.set_tag(f"data.{context}_size", str(len(rows)))


def end_orphans(client, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of any stage whose process (on this host) no longer exists:
    a stage killed with `kill -9`, or a queued `dvc exp` whose worker died. Each gets a tag
    saying so; its run id is returned. (A killed training stage that is rerun resumes its run.)"""
    from ..core.io import pid_alive

    host = socket.gethostname()
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                              max_results=1000)
    ended = []
    for run in runs:
        tags = run.data.tags
        if tags.get("process.host") == host and tags.get("process.pid", "").isdigit() and \
                not pid_alive(int(tags["process.pid"])):
            if tags.get("pipeline.parent") == "true":  # its dvc process ended: so did the pipeline
                children = client.search_runs([experiment_id], filter_string=(
                    f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"), max_results=1000)
                done = all(c.info.status == "FINISHED" for c in children)
                client.set_terminated(run.info.run_id, status="FINISHED" if done else "FAILED")
                continue
            client.set_tag(run.info.run_id, "killed.reason",
                           f"process {tags['process.pid']} on {host} ended without finishing the "
                           f"run (kill -9, or a dvc exp queue worker that died)")
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    return ended


def _process(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, start time, command line) of a process, from /proc; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[1]), fields[19], cmdline


def dvc_invocation() -> tuple[int, str, str] | None:
    """The `dvc repro` / `dvc exp` process this stage runs under: (pid, a key unique to that
    invocation, its command line), or None for a stage run by hand."""
    pid = os.getppid()
    for _ in range(8):
        found = _process(pid)
        if found is None or pid <= 1:
            return None
        parent, started, cmdline = found
        words = cmdline.split()
        if any(Path(w).name == "dvc" or w.endswith("/dvc") for w in words[:2]) or \
                (len(words) > 2 and words[1] == "-m" and words[2] == "dvc"):
            return pid, f"{socket.gethostname()}:{pid}:{started}", cmdline.strip()
        pid = parent
    return None


PARENT_TAG = "pipeline.key"


def pipeline_parent(client, experiment_id: str) -> str | None:
    """The run that groups one `dvc repro` / `dvc exp run`'s stage runs (made by its first
    stage; the stages' runs nest under it), or None outside DVC. It is RUNNING while the DVC
    process lives; `end_orphans` ends it then, FINISHED when every stage run finished."""
    from filelock import FileLock

    found = dvc_invocation()
    if found is None:
        return None
    pid, key, cmdline = found
    lock = repo_root() / ".mlflow-pipeline.lock"
    with FileLock(str(lock), timeout=120):
        runs = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{key}'",
                                  max_results=1)
        if runs:
            return runs[0].info.run_id
        exp = dvc_experiment()
        name = f"dvc exp {exp}" if exp != "workspace" else "dvc repro " + time.strftime("%m-%d %H:%M")
        tags = {PARENT_TAG: key, "dvc.exp": exp, "dvc.command": cmdline[:500],
                "process.host": socket.gethostname(), "process.pid": str(pid),
                "git.commit": git_commit(), "pipeline.parent": "true"}
        sweep = in_sweep()
        if sweep:  # a sweep's trial: nested under the study's run
            tags.update({"sweep.study": sweep["DEEPLAB_SWEEP_STUDY"],
                         "sweep.trial": sweep["DEEPLAB_SWEEP_NUMBER"], "sweep.state": "RUNNING"})
            if sweep["DEEPLAB_SWEEP_RUN"]:
                tags["mlflow.parentRunId"] = sweep["DEEPLAB_SWEEP_RUN"]
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        return run.info.run_id


def finish_pipeline(run_id: str, result: str = "") -> None:
    """End the pipeline run that `run_id` is nested under (the last stage calls it): FINISHED
    when every stage run in it finished, its name followed by `result` (what the runs table
    then shows, e.g. the main model's and the variants' mIoU)."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
    if not parent:
        return
    run = client.get_run(parent)
    if run.data.tags.get("pipeline.parent") != "true" or run.info.status != "RUNNING":
        return
    children = client.search_runs([run.info.experiment_id], max_results=1000,
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    if result:  # first, so that the runs table's narrow name column shows it
        head, _, rest = result.partition(" · ")
        client.set_tag(parent, "mlflow.runName", " · ".join(filter(None, [head, run.info.run_name, rest])))
    if all(c.info.status == "FINISHED" for c in children):
        client.set_terminated(parent, status="FINISHED")


def start_stage_run(stage: str, params: Params, experiment: str,
                    data_files: list[str | Path] = (), resume_run_id: str | None = None,
                    splits: dict[str, str | Path] | None = None, ablation: str | None = None):
    """An MLflow run for one DVC stage, nested under its `dvc repro` / `dvc exp run`
    (`pipeline_parent`): the settings it ran with logged flat, tags for stage/exp/commit/data.

    Only this run's own settings are logged (the `ablations` table, the other runs'
    settings, never is); a training run's `ablation` param says which it is (`main` or a
    variant's name), so Compare shows what differs. `resume_run_id` (stored in a training
    checkpoint) continues that run, so that a stage killed and resumed has one run with one
    continuous loss curve. Runs of any stage left RUNNING by a killed process on this machine
    are marked KILLED (`end_orphans`). `splits` (`{context: split list}`) are logged as the
    run's dataset inputs.
    """
    mlflow = setup(experiment)
    client = mlflow.MlflowClient()
    experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    end_orphans(client, experiment_id)
    tags = {"dvc.stage": stage, "dvc.exp": dvc_experiment(),
            "git.commit": git_commit(), "process.host": socket.gethostname(),
            "process.pid": str(os.getpid())}
    if data_files:
        tags["data.hash"] = files_hash(list(data_files))
    settings = {k: v for k, v in params.as_dict().items() if k != "ablations"}
    flat = {k: (str(v) if isinstance(v, (list, dict)) or v is None else v)
            for k, v in flatten(settings).items()}
    if ablation is not None:
        flat["ablation"] = ablation
    logged: dict[str, str] = {}
    if resume_run_id:
        try:
            logged = client.get_run(resume_run_id).data.params
        except mlflow.exceptions.MlflowException:
            resume_run_id = None  # the run was deleted: start a new one
    if resume_run_id:
        run = mlflow.start_run(run_id=resume_run_id)
        mlflow.set_tags(tags)
        mlflow.set_tag("resumed", "true")
    else:
        parent = pipeline_parent(client, experiment_id)
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = mlflow.start_run(run_name=f"{stage}", tags=tags)
        log_split_inputs(splits or {})
    # A resumed run keeps the values it was started with (the checkpoint matched them).
    mlflow.log_params({k: v for k, v in flat.items() if k not in logged})
    return run
