"""Content fingerprints, one place for all of them: a file's bytes (dataset images, deployed
files, downloads), a JSON-able value (settings, class lists), small files that define a run's
data, and a cheap signature of many large files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (`algorithm`: any of hashlib's, e.g. md5 for the
    published archive checksums)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def value_sha256(value: Any) -> str:
    """sha256 of a JSON-able value, independent of key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


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
