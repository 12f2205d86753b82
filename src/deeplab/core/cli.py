"""The command line: entry-point helpers (logging; one clear error line and exit status 2 for
the errors a user can fix) and `python -m deeplab.core.cli [params.yaml ...]`, which checks
whole params files (the git hooks run it before DVC reads one)."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import DeeplabError, no_space_cause


def error_line(exc: BaseException) -> str | None:
    """The one line to print for a failure a user can fix: a `DeeplabError`, or a full disk
    anywhere below (which may surface as a library's own exception); None for a bug."""
    if isinstance(exc, DeeplabError):
        return f"error: {exc}"
    cause = no_space_cause(exc)
    return f"error: {cause}; free some space and rerun (outputs already written are whole)" \
        if cause else None


def run_command(fn: Callable[[], int | None]) -> int:
    """`fn()`'s exit status (None: 0); a user-fixable failure prints `error: <message>` and
    gives 2. Any other exception is a programming error and keeps its traceback."""
    try:
        return fn() or 0
    except Exception as exc:  # noqa: BLE001 - sorted below: user errors vs bugs
        line = error_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2


def stage_main(fn: Callable[[], None]) -> Callable[[], None]:
    """Run a stage with logging on; exit with `run_command`'s status when it is not 0."""

    @functools.wraps(fn)
    def wrapper() -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        status = run_command(fn)
        if status:
            sys.exit(status)

    return wrapper


def stage_paths(*names: str, positional: tuple[str, ...] = (),
                optional: tuple[str, ...] = ()) -> argparse.Namespace:
    """The paths a stage reads and writes, given by `dvc.yaml` as `--name PATH` options
    (dvc.yaml holds every path once); `positional` names plain arguments (a variant name),
    `optional` paths that may be left out (None)."""
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__)
    for name in positional:
        parser.add_argument(name)
    for name in names + optional:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=Path,
                            required=name not in optional, default=None)
    return parser.parse_args()


def check_params(paths: Sequence[str]) -> int:
    """Validate whole params files; each fault one line on stderr; 2 if any file has one."""
    from .config import load_params
    from .errors import ConfigError

    status = 0
    for path in paths or ["params.yaml"]:
        try:
            load_params(path)
        except ConfigError as exc:
            for line in str(exc).splitlines():
                print(f"error: {line if line.startswith(str(path)) else f'{path}: {line}'}",
                      file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(check_params(sys.argv[1:]))
