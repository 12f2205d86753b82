"""Checksum-verified, resumable, retried downloads and archive extraction that stays inside
its target directory."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ..io import atomic_dir

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed for good (after retries) or did not match its checksum."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target directory, or is a link."""


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        if have and r.status != 206:  # the server ignored the range: start over
            have = 0
        length = int(r.headers.get("Content-Length") or 0)
        with open(part, "ab" if have else "wb") as f, tqdm(
                total=have + length or None, initial=have, unit="B", unit_scale=True,
                desc=part.name.removesuffix(".part"), leave=False) as bar:
            for block in iter(lambda: r.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))


def download(url: str, dest: Path, md5: str, retries: int = 3, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, resuming a `.part` file, verifying the MD5, renaming at the end."""
    if dest.is_file() and md5sum(dest) == md5:
        log.info("%s already present and verified", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            if attempt == retries:
                raise DownloadError(f"{url}: download failed after {retries + 1} attempts ({exc}); "
                                    f"the partial file {part} is kept for resuming") from exc
            wait = min(2 ** attempt, 30)
            log.warning("%s: %s; retrying in %ss", url, exc, wait)
            time.sleep(wait)
    got = md5sum(part)
    if got != md5:
        part.unlink()
        raise DownloadError(f"{url}: checksum mismatch (expected md5 {md5}, got {got}); "
                            f"the corrupt download was removed")
    os.replace(part, dest)
    return dest


def _check_member(name: str, is_link: bool, archive: Path) -> None:
    p = PurePosixPath(name)
    if is_link:
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a link; refusing to extract")
    if p.is_absolute() or ".." in p.parts or name.startswith(("/", "\\")) or ":" in p.parts[0]:
        raise UnsafeArchiveError(f"{archive}: member {name!r} would land outside the target "
                                 f"directory; refusing to extract")


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract a tar or zip archive into `target` (atomically), refusing unsafe members."""
    with atomic_dir(target) as tmp:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(info.filename, stat.S_ISLNK(info.external_attr >> 16), archive)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(m.name, m.issym() or m.islnk() or m.isdev(), archive)
                tf.extractall(tmp, members=members, filter="data")
        else:
            raise ValueError(f"{archive}: neither a zip nor a tar archive")
    return target
