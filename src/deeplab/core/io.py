"""Atomic file and directory writes: readers never see a half-written output.

Temporary names carry the writer's process id (`.<name>.<pid>-<random>.tmp`), so a later run
removes what a killed run (`kill -9`) left behind without touching the temporary files of a
run still going on. Files and folders get the permissions of the user's umask (`mkstemp`
and `mkdtemp` alone would make them private).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import DiskFullError, OutputError

UNWRITABLE = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted (an immutable file or folder?)"}


@contextlib.contextmanager
def _named_when_full(path: Path, what: str) -> Iterator[None]:
    """A full disk (or quota) inside the block becomes a DiskFullError naming `path`; a
    read-only, immutable or forbidden place an OutputError naming it."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, (DiskFullError, OutputError)):
            raise
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f" (the previous {what} is kept)" if path.exists() else ""
            raise DiskFullError(f"{path}: no space left on device; nothing was written{kept}") from None
        if exc.errno in UNWRITABLE:
            raise OutputError(f"{path}: cannot write this {what}: {UNWRITABLE[exc.errno]} "
                              f"({exc.filename or path.parent}); choose another place") from None
        raise


def make_dirs(path: str | Path) -> Path:
    """`mkdir -p`; an OutputError naming a place where no folder can be made."""
    path = Path(path)
    with _named_when_full(path, "folder"):
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_writable(folder: str | Path) -> Path:
    """`folder` (made if missing) takes new files; an OutputError naming it otherwise. For work
    that takes minutes before its first write (an export): fail first, in one line."""
    folder = make_dirs(folder)
    with _named_when_full(folder / "(a new file)", "file"):
        with tempfile.TemporaryFile(dir=folder):
            pass
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temporary siblings of `path` whose writing process is gone; return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)-[^/]*\.tmp(\.[A-Za-z0-9]+)?$")
    removed = []
    for entry in path.parent.iterdir():
        match = pattern.match(entry.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    old = path.with_name(f".{path.name}.old")  # left by a kill between the two renames below
    if old.exists() and path.exists():
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    elif old.exists():
        old.rename(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    with _named_when_full(path, "file"):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _named_when_full(path, "file"):
            yield tmp_path
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block succeeds."""
    path = Path(path)
    with _named_when_full(path, "folder"):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp",
                                    dir=path.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        with _named_when_full(path, "folder"):
            yield tmp
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_torch(path: str | Path, obj: Any) -> None:
    """`torch.save(obj)` to `path` atomically; a full disk is a DiskFullError naming `path`.

    The bytes are built in memory and written with Python's file API: torch's own writer
    reports a full disk as an opaque `RuntimeError` ("unexpected pos").
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def save_image(path: str | Path, image: Any, **options: Any) -> None:
    """A PIL image written atomically (`options` go to `Image.save`, e.g. `format="PNG"`).

    Encoded in memory first: PIL's JPEG writer truncates silently on a full disk.
    """
    buffer = io.BytesIO()
    image.save(buffer, **options)
    write_bytes(path, buffer.getbuffer())


def save_figure(path: str | Path, figure: Any, **options: Any) -> None:
    """A matplotlib figure as PNG, atomically (`options` go to `Figure.savefig`)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **options)
    write_bytes(path, buffer.getbuffer())


def write_csv(path: str | Path, frame: Any, **options: Any) -> None:
    """A pandas DataFrame as CSV, atomically (`options` go to `DataFrame.to_csv`)."""
    write_text(path, frame.to_csv(**options))


def _non_finite(data: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinity in `data` (None: none)."""
    if isinstance(data, float) and not (data == data and abs(data) != float("inf")):
        return where or "(the value)"
    items = data.items() if isinstance(data, dict) else enumerate(data) \
        if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def write_json(path: str | Path, data: Any) -> None:
    """`data` as strict JSON, atomically: NaN and infinity are not JSON, so a value that is one
    is an OutputError naming the key (write null and say why instead)."""
    bad = _non_finite(data)
    if bad:
        raise OutputError(f"{path}: {bad} is not a finite number; nothing was written")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def append_text(path: str | Path, text: str) -> None:
    """Append to a log-like file (no atomic replace: it grows line by line); an unwritable place
    is an OutputError naming it."""
    path = Path(path)
    with _named_when_full(path, "file"):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(text)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
