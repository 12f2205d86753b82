"""MLflow tracking: SQLite backend at the repository root, runs tagged with DVC context."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

from .core.config import flatten
from .core.repo import repo_root  # noqa: F401 - where the store lives
from .core.schema import Params


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set (a team server), else `sqlite:///<repo>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: `mlartifacts/` beside a local store; for a
    tracking server, None (the server's own store, `mlflow-artifacts:/`)."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return (repo_root() / "mlartifacts").as_uri()


# The columns of MLflow's SQL schema that hold absolute artifact locations.
ARTIFACT_COLUMNS = {"experiments": "artifact_location", "runs": "artifact_uri",
                    "logged_models": "artifact_location", "model_versions": "storage_location"}


def relocate_store(uri: str) -> None:
    """Keep a repository's own SQLite store linked to its artifacts when the folder was moved or
    copied: MLflow records absolute `file://<repo>/mlartifacts/...` locations, which still
    point into the old folder. When `mlartifacts/` lies beside `mlflow.db`, every recorded
    location below the old folder is rewritten to the new one (one log line); when neither
    the new nor the old folder holds the artifacts, a RegistryError names the fix."""
    import logging
    import sqlite3
    from urllib.parse import unquote

    from .core.errors import RegistryError

    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri.removeprefix("sqlite:///"))
    if not db.is_file():
        return
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
        try:
            locations = [row[0] for row in con.execute("SELECT artifact_location FROM experiments")]
        except sqlite3.DatabaseError:
            return  # not (yet) an MLflow store: MLflow reports it
        here = db.parent.resolve().as_uri()
        olds = {loc.removesuffix("/mlartifacts") for loc in locations
                if loc and loc.startswith("file://") and loc.endswith("/mlartifacts")} - {here}
        for old in olds:
            old_dir = Path(unquote(old.removeprefix("file://")))
            if not (db.parent / "mlartifacts").is_dir():
                if (old_dir / "mlartifacts").is_dir():
                    continue  # mlflow.db alone was copied: its artifacts are still where they were
                raise RegistryError(f"tracking store {db} records its artifacts in "
                                    f"{old_dir / 'mlartifacts'}, which does not exist; move the "
                                    f"mlartifacts/ folder beside {db.name} (it is rewritten then)")
            try:
                _rewrite(con, old, here, old_dir, db.parent.resolve())
            except sqlite3.OperationalError as exc:
                raise RegistryError(f"tracking store {db} was moved or copied from {old_dir} and "
                                    f"its artifact locations must be rewritten, but it cannot be "
                                    f"written ({exc}); make it writable and run again") from None
            logging.getLogger(__name__).warning(
                "tracking store %s was moved or copied from %s: its artifact locations now point "
                "into %s", db, old_dir, db.parent)


def _rewrite(con, old: str, here: str, old_dir: Path, new_dir: Path) -> None:
    """Every recorded artifact location below `old` (a file URI, or the plain path `old_dir`)
    moved below `here` (`new_dir`), in one transaction."""
    with con:
        for table, column in ARTIFACT_COLUMNS.items():
            for before, after in ((old + "/", here + "/"), (f"{old_dir}/", f"{new_dir}/")):
                con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                            f"WHERE substr({column}, 1, ?) = ?",
                            (after, len(before) + 1, len(before), before))


def check_store(uri: str, timeout: float = 5.0) -> None:
    """RegistryError in one line, within seconds, when the tracking store cannot work: an
    unwritable SQLite database or folder, or a server that does not answer (MLflow's own
    retries take about two minutes to give up)."""
    import urllib.error
    import urllib.request

    from .core.errors import RegistryError

    if uri.startswith("sqlite:///"):
        import tempfile

        db = Path(uri.removeprefix("sqlite:///"))
        folder = db.parent
        if not folder.is_dir():
            raise RegistryError(f"tracking store {uri}: folder {folder} does not exist")
        try:  # really try: permission bits say little to root or on special filesystems
            with tempfile.TemporaryFile(dir=folder):
                pass
            if db.exists():
                with open(db, "r+b"):
                    pass
        except OSError as exc:
            raise RegistryError(f"tracking store {uri}: {db if db.exists() else folder} is not "
                                f"writable ({exc.strerror})") from None
        relocate_store(uri)
    elif uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as answer:
                if answer.status != 200:
                    raise RegistryError(f"tracking server {uri}: /health answered {answer.status}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(f"tracking server {uri} is not reachable ({reason})") from None


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=repo_root())
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def files_hash(paths: list[str | Path]) -> str:
    """sha256 over the contents of small files (split lists) that define the data used."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def files_signature(paths: list[str]) -> str:
    """sha256 over the names, sizes and modification times of many (large) files.

    Cheap enough for a whole dataset (one `stat` per file); changes when any file is
    rewritten, so a checkpoint from other data is never resumed.
    """
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def dvc_experiment() -> str:
    """The name of the `dvc exp run` this process belongs to, or 'workspace'."""
    return os.environ.get("DVC_EXP_NAME") or "workspace"


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the experiment's type


def setup(experiment: str):
    """Point MLflow at the tracking URI and select (creating if needed) the experiment, tagged
    as a model-training experiment (the 3.17 UI's view follows its own workflow selector:
    docs/tracking.md)."""
    import logging

    import mlflow

    uri = tracking_uri()
    check_store(uri)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # MLflow logs a store failure with its traceback before raising it; the stages report it
    # themselves, in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_location(uri),
                                 tags=EXPERIMENT_KIND)
    elif any(found.tags.get(k) != v for k, v in EXPERIMENT_KIND.items()):
        for key, value in EXPERIMENT_KIND.items():
            mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
    mlflow.set_experiment(experiment)
    return mlflow


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
    from .core.io import pid_alive

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
        run = client.create_run(experiment_id, run_name=name, tags={
            PARENT_TAG: key, "dvc.exp": exp, "dvc.command": cmdline[:500],
            "process.host": socket.gethostname(), "process.pid": str(pid),
            "git.commit": git_commit(), "pipeline.parent": "true"})
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
