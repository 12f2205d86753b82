"""Where the repository is, and what in it belongs to the pipeline (stage outputs, the
tracking store): paths the user's data must stay apart from."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .errors import ConfigError

# Folders and files below the repository root that stages write or the tracking store holds.
OWNED = ("data", "models", "reports", "mlartifacts", "mlflow.db", ".dvc")


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


def check_apart(path: str | Path, key: str) -> Path:
    """`path` resolved; ConfigError naming `key` when it is, holds or lies inside what the
    pipeline owns (the repository's data/, models/, reports/, the MLflow store, .dvc/): a
    folder of the user's read by a stage must not be one that stages write."""
    folder = Path(path).expanduser().resolve()
    root = repo_root().resolve()
    for name in OWNED:
        owned = root / name
        if folder == owned or folder.is_relative_to(owned) or owned.is_relative_to(folder):
            raise ConfigError(f"{key}: {path} {'is' if folder == owned else 'overlaps'} the "
                              f"repository's {name}{'/' if not name.endswith('.db') else ''} "
                              f"({owned}), which the pipeline writes; name a folder of your own "
                              f"images apart from it")
    return folder
