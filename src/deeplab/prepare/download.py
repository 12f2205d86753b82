"""Checksum-verified, resumable, retried downloads and archive extraction that stays inside
its target directory."""

from __future__ import annotations

import http.client
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

from ..core.errors import DownloadError, UnsafeArchiveError
from ..core.hashing import file_sha256
from ..core.io import atomic_dir, make_dirs

log = logging.getLogger(__name__)
CHUNK = 1 << 20
__all__ = ["DownloadError", "UnsafeArchiveError", "download", "md5sum", "safe_extract"]


def md5sum(path: Path) -> str:
    return file_sha256(path, "md5")


class _IncompleteTransfer(OSError):
    """The server closed the connection before sending all the bytes it announced."""


class _PermanentHTTPError(Exception):
    """An HTTP answer that retrying will not change (404, 403, ...)."""


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """Append the rest of `url` to `part` (a Range request when it has bytes already)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the .part is complete
            log.info("%s: already complete (%d bytes), verifying", part, have)
            return
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            raise _PermanentHTTPError(f"HTTP {exc.code} {exc.reason}") from exc
        raise
    with response as r:
        if have and r.status != 206:  # the server ignored the range: start over
            have = 0
        length = r.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        written = 0
        with open(part, "ab" if have else "wb") as f, tqdm(
                total=have + expected if expected is not None else None, initial=have, unit="B",
                unit_scale=True, desc=part.name.removesuffix(".part"), leave=False) as bar:
            for block in iter(lambda: r.read(CHUNK), b""):
                f.write(block)
                written += len(block)
                bar.update(len(block))
        if expected is not None and written < expected:
            raise _IncompleteTransfer(f"connection closed after {written} of {expected} bytes")


def _kept(part: Path) -> str:
    if part.is_file() and part.stat().st_size:
        return f"the partial file {part} ({part.stat().st_size} bytes) is kept for resuming"
    return "nothing was saved"


def download(url: str, dest: Path, md5: str, retries: int = 3, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, resuming a `.part` file, verifying the MD5, renaming at the end.

    A transfer cut short (fewer bytes than announced) is retried from where it stopped; a
    `.part` that is already complete is verified, not downloaded again.
    """
    if dest.is_file() and md5sum(dest) == md5:
        log.info("%s already present and verified", dest)
        return dest
    make_dirs(dest.parent)  # an unwritable downloads folder: one line, before any transfer
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except _PermanentHTTPError as exc:
            raise DownloadError(f"{url}: {exc}; {_kept(part)}") from None
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
            if attempt == retries:
                raise DownloadError(f"{url}: download failed after {retries + 1} attempts ({exc}); "
                                    f"{_kept(part)}") from None
            wait = min(2 ** attempt, 30)
            log.warning("%s: %s; retrying in %ss", url, exc, wait)
            time.sleep(wait)
    got = md5sum(part)
    if got != md5:
        part.unlink()
        raise DownloadError(f"{url}: checksum mismatch (expected md5 {md5}, got {got}); "
                            f"the corrupt download {part} was removed")
    os.replace(part, dest)
    return dest


def _outside(archive: Path, name: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: member {name!r} would land outside the target "
                              f"directory; refusing to extract")


def _link(archive: Path, name: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: member {name!r} is a link; refusing to extract")


def _check_zip_member(info: zipfile.ZipInfo, archive: Path) -> None:
    """zipfile rewrites unsafe names silently; refuse them (and links) instead."""
    p = PurePosixPath(info.filename)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise _link(archive, info.filename)
    if p.is_absolute() or ".." in p.parts or info.filename.startswith(("/", "\\")) or \
            ":" in p.parts[0]:
        raise _outside(archive, info.filename)


def _tar_filter(archive: Path):
    """tarfile's own `data` filter (paths outside the target, devices), absolute names refused
    rather than rewritten, and no links at all: datasets hold none."""
    def refuse(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        if member.issym() or member.islnk():
            raise _link(archive, member.name)
        if member.name.startswith(("/", "\\")):
            raise _outside(archive, member.name)
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError:
            raise _outside(archive, member.name) from None
    return refuse


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract a tar or zip archive into `target` (atomically), refusing unsafe members."""
    with atomic_dir(target) as tmp:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_zip_member(info, archive)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter=_tar_filter(archive))
        else:
            raise UnsafeArchiveError(f"{archive}: neither a zip nor a tar archive")
    return target
