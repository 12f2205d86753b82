"""Where runs are kept: the tracking URI (a SQLite store at the repository root, or a team
server), its experiment, and a store that was moved or copied."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path


def repo_root() -> Path:
    """DVC's `DVC_ROOT` inside stages, else the git top level, else the working directory.

    A queued `dvc exp run` runs in a temporary copy under `<repo>/.dvc/tmp/exps/`; its runs
    belong to the repository's store, not to a database that disappears with the copy.
    """
    if os.environ.get("DVC_ROOT"):
        root = Path(os.environ["DVC_ROOT"])
        parts = root.parts
        for k in range(len(parts) - 2):
            if parts[k:k + 3] == (".dvc", "tmp", "exps"):
                return Path(*parts[:k])
        return root
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True)
        return Path(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd()


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set (a team server), else `sqlite:///<repo>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: `mlartifacts/` beside a local SQLite store
    (the repository's own, or one named by MLFLOW_TRACKING_URI elsewhere); for a tracking
    server, None (the server's own store, `mlflow-artifacts:/`)."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
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

    from ..core.errors import RegistryError

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

    from ..core.errors import RegistryError

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
        from mlflow.exceptions import MlflowException

        try:
            mlflow.create_experiment(experiment, artifact_location=artifact_location(uri),
                                     tags=EXPERIMENT_KIND)
        except MlflowException as exc:  # another process (a sweep worker) made it first
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = mlflow.get_experiment_by_name(experiment)
    if found is not None and any(found.tags.get(k) != v for k, v in EXPERIMENT_KIND.items()):
        for key, value in EXPERIMENT_KIND.items():
            mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
    mlflow.set_experiment(experiment)
    return mlflow
