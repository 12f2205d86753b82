"""The unlabeled pool the rank stage scores: every image under `data.unlabeled_root` (or, for
the synthetic source with `pool_images`, the generated pool), listed with a hash of its
bytes in `data/pool.csv` (`image`, `image_sig`). The list changes when an image is added,
removed or edited, and only then: what depends on it (rank) reruns on nothing else."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from ..core.errors import ConfigError, MissingFileError
from ..core.io import write_text
from ..data.images import IMAGE_SUFFIXES
from .signature import HashCache, walk_files

log = logging.getLogger(__name__)
POOL_COLUMNS = ["image", "image_sig"]
# Folders and files below the repository root that stages write or the tracking store holds.
OWNED = ("data", "models", "reports", "mlartifacts", "mlflow.db", ".dvc")


def check_apart(path: str | Path, key: str) -> Path:
    """`path` resolved; ConfigError naming `key` when it is, holds or lies inside what the
    pipeline owns (the repository's data/, models/, reports/, the MLflow store, .dvc/): a
    folder of the user's read by a stage must not be one that stages write."""
    folder = Path(path).expanduser().resolve()
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()  # the stage's repository
    for name in OWNED:
        owned = root / name
        if folder == owned or folder.is_relative_to(owned) or owned.is_relative_to(folder):
            raise ConfigError(f"{key}: {path} {'is' if folder == owned else 'overlaps'} the "
                              f"repository's {name}{'/' if not name.endswith('.db') else ''} "
                              f"({owned}), which the pipeline writes; name a folder of your own "
                              f"images apart from it")
    return folder


def listable(path: str) -> bool:
    """Whether a file name can go into a UTF-8 list (a name in another encoding cannot: it is
    skipped with a line naming it)."""
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        log.warning("%r: skipped, its name is not UTF-8 (rename it to include it)", path)
        return False


def shown_path(path: str) -> str:
    """`path` relative to the working directory when inside it (the same in every clone)."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def pool_list(root: str | Path | None, cache_file: Path | None = None) -> pd.DataFrame:
    """The images under `root` (recursively, in a stable order) with the hash of each; an
    empty list for no root."""
    if root is None:
        return pd.DataFrame(columns=POOL_COLUMNS)
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise MissingFileError(f"data.unlabeled_root: {folder} is not a folder of images")
    cache = HashCache(cache_file)
    rows = [(shown_path(path), cache.digest(path, st)[:20]) for path, st in walk_files(str(folder))
            if Path(path).suffix.lower() in IMAGE_SUFFIXES and listable(path)]
    cache.save()
    return pd.DataFrame(rows, columns=POOL_COLUMNS)


def write_pool_list(root: str | Path | None, out: Path, cache_file: Path | None = None) -> int:
    """Write the pool list to `out` when it differs from what is there; the number of images."""
    text = pool_list(root, cache_file).to_csv(index=False)
    if not (out.is_file() and out.read_text() == text):
        write_text(out, text)
    return text.count("\n") - 1
