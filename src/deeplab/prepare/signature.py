"""Content signatures of dataset folders: what decides whether preprocess and the training
stages rerun.

A signature is a sha256 over every file's path (below its root) and content hash, so it is
the same in every clone, in every `dvc exp run --queue` workspace, and after a generator
rewrites identical bytes; modification times never enter it. Each file is hashed once and
the hash is cached by path, inode, size and modification time (as DVC's own state does), so
looking at an unchanged dataset costs one `stat` per file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Iterator

from ..core.errors import MissingFileError
from ..core.hashing import file_sha256

log = logging.getLogger(__name__)
CACHE_VERSION = 1


file_digest = file_sha256  # the digest of one file's bytes


def walk_files(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """(path, stat) of every regular file under `root`, in a stable order. Dangling links and
    link loops are skipped with a warning naming them (they hold no data a stage could read);
    an unreadable folder or file is a MissingFileError naming it."""
    def failed(exc: OSError) -> None:
        raise MissingFileError(f"{exc.filename}: cannot read this folder under the dataset "
                               f"root {root} ({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=failed):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError as exc:
                if os.path.islink(path):
                    log.warning("%s: skipped, a dangling symbolic link or a link loop (%s)",
                                path, exc.strerror)
                    continue
                raise MissingFileError(f"{path}: cannot read this file under the dataset root "
                                       f"{root} ({exc.strerror})") from None
            if stat.S_ISREG(st.st_mode):
                yield path, st


class HashCache:
    """Content hashes of files, keyed by (path, inode, size, mtime), kept in a JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, str] = {}
        self.used: set[str] = set()
        self.hashed = 0
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == CACHE_VERSION:
                    self.entries = dict(data["entries"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                log.warning("%s: unreadable hash cache, rebuilding it", path)

    def digest(self, path: str, st: os.stat_result) -> str:
        key = f"{os.path.abspath(path)}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"
        self.used.add(key)
        if key not in self.entries:
            self.entries[key] = file_digest(path)
            self.hashed += 1
        return self.entries[key]

    def save(self) -> None:
        """Keep the entries used now (files that changed or went away drop out)."""
        if self.path is None or (not self.hashed and set(self.entries) == self.used):
            return
        from ..core.io import write_text

        kept = {k: v for k, v in self.entries.items() if k in self.used}
        try:
            write_text(self.path, json.dumps({"version": CACHE_VERSION, "entries": kept}))
        except OSError as exc:  # a cache: never a reason to fail
            log.warning("%s: hash cache not saved (%s)", self.path, exc)


def tree_signature(roots: list[str | None], cache_file: Path | None = None) -> str:
    """sha256 over (root-relative path, content hash) of every file under `roots`."""
    cache = HashCache(cache_file)
    h = hashlib.sha256()
    for index, root in enumerate(r for r in roots if r):
        for path, st in walk_files(root):
            rel = os.path.relpath(path, root)
            h.update(f"{index}\0{rel}\0{cache.digest(path, st)}\n".encode("utf-8", "surrogateescape"))
    cache.save()
    if cache.hashed:
        log.info("hashed %d new or changed files", cache.hashed)
    return h.hexdigest()
