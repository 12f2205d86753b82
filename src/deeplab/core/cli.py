"""Entry-point helpers: logging, and one clear error line + exit status 2 for the project's errors."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Callable

from .errors import DeeplabError, no_space_cause


def error_line(exc: BaseException) -> str | None:
    """The one line to print for a failure a user can fix: a `DeeplabError`, or a full disk
    anywhere below (which may surface as a library's own exception); None for a bug."""
    if isinstance(exc, DeeplabError):
        return f"error: {exc}"
    cause = no_space_cause(exc)
    return f"error: {cause}; free some space and rerun (outputs already written are whole)" \
        if cause else None


def stage_main(fn: Callable[[], None]) -> Callable[[], None]:
    """Run a stage; a `DeeplabError` or a full disk prints `error: <message>` and exits with
    status 2.

    Any other exception is a programming error and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper() -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - sorted below: user errors vs bugs
            line = error_line(exc)
            if line is None:
                raise
            print(line, file=sys.stderr)
            sys.exit(2)

    return wrapper


def stage_paths(*names: str, positional: tuple[str, ...] = ()) -> argparse.Namespace:
    """The paths a stage reads and writes, given by `dvc.yaml` as `--name PATH` options
    (dvc.yaml holds every path once); `positional` names plain arguments (a variant name)."""
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__)
    for name in positional:
        parser.add_argument(name)
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=Path, required=True)
    return parser.parse_args()
