"""Entry-point helpers: logging, and one clear error line + non-zero exit for bad input."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from .config import ConfigError
from .data.download import DownloadError, UnsafeArchiveError
from .data.samples import BadSampleError
from .train import TrainingDivergedError

EXPECTED = (ConfigError, BadSampleError, FileNotFoundError, FileExistsError, DownloadError,
            UnsafeArchiveError, TrainingDivergedError, ValueError)


def stage_main(fn: Callable[[], None]) -> Callable[[], None]:
    """Run a stage; expected failures print `error: <message>` and exit with status 2."""

    @functools.wraps(fn)
    def wrapper() -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            fn()
        except EXPECTED as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper
