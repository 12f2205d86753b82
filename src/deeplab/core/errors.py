"""The project's error types: failures a user can fix, reported as one line with exit status 2.

`cli.stage_main` and the command-line tools catch `DeeplabError` only; any other exception is
a programming error and keeps its traceback. Each type also derives from the builtin that
library callers would expect (`ValueError`, `FileNotFoundError`, ...).
"""

from __future__ import annotations


class DeeplabError(Exception):
    """A failure caused by input, settings or the environment; the message says what and where."""


class ConfigError(DeeplabError, ValueError):
    """A params file (or option) that does not match the schema; the message names the key path."""


class MissingFileError(DeeplabError, FileNotFoundError):
    """A file or folder the user (or an earlier stage) should have provided is missing."""


class BadSampleError(DeeplabError, ValueError):
    """An input sample that cannot be used; the message names the file and the fault."""


class ModelFileError(DeeplabError, ValueError):
    """A model or checkpoint file that is unreadable, unsafe, or of another architecture."""


class UnsafeFileError(ModelFileError):
    """A file that holds pickled objects other than tensors and plain data (could run code)."""


class DownloadError(DeeplabError):
    """A download that failed for good (after retries) or did not match its checksum."""


class UnsafeArchiveError(DeeplabError, ValueError):
    """An archive member would land outside the target directory, or is a link."""


class TrainingDivergedError(DeeplabError):
    """The loss became NaN or infinite."""


class RegistryError(DeeplabError):
    """The tracking store or model registry refused or could not be reached."""


class InputError(DeeplabError, ValueError):
    """A bad command-line input (e.g. an output that would overwrite an input)."""


class DiskFullError(DeeplabError, OSError):
    """No space left on the device (or quota) where an output was being written."""


class OutputError(DeeplabError, OSError):
    """An output that cannot be written there: a read-only, immutable or forbidden place."""


def no_space_cause(exc: BaseException) -> str | None:
    """'no space left on device (<path>)' or SQLite's 'database or disk is full' when `exc`, or
    an exception that caused it (SQLAlchemy's `orig` included), says the disk is full."""
    import errno

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "no space left on device" + (f" ({e.filename})" if e.filename else "")
        text = str(e).lower()
        if "database or disk is full" in text:
            return "database or disk is full (no space left on device)"
        if "no space left on device" in text:
            return "no space left on device"
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return None


def first_line(exc: BaseException) -> str:
    """The cause to print: a full disk wherever it hides in the chain, else the first line."""
    cause = no_space_cause(exc)
    if cause:
        return cause
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
