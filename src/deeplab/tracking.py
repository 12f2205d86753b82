"""MLflow tracking: SQLite backend at the repository root, runs tagged with DVC context."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

from .config import flatten


def repo_root() -> Path:
    """DVC's `DVC_ROOT` inside stages, else the git top level, else the working directory."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"])
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True)
        return Path(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd()


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set (a team server), else `sqlite:///<repo>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def artifact_location() -> str:
    return (repo_root() / "mlartifacts").as_uri()


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


def setup(experiment: str):
    """Point MLflow at the tracking URI and select (creating if needed) the experiment."""
    import logging

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_location())
    mlflow.set_experiment(experiment)
    return mlflow


def start_stage_run(stage: str, params: dict[str, Any], experiment: str,
                    data_files: list[str | Path] = ()):
    """An MLflow run for one DVC stage: params logged flat, tags for stage/exp/commit/data."""
    mlflow = setup(experiment)
    tags = {"dvc.stage": stage, "dvc.exp": os.environ.get("DVC_EXP_NAME", "workspace"),
            "git.commit": git_commit()}
    if data_files:
        tags["data.hash"] = files_hash(list(data_files))
    run = mlflow.start_run(run_name=f"{stage}", tags=tags)
    flat = {k: (str(v) if isinstance(v, (list, dict)) or v is None else v)
            for k, v in flatten(params).items()}
    mlflow.log_params(flat)
    return run
