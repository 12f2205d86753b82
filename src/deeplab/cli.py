"""Entry-point helpers: logging, and one clear error line + exit status 2 for the project's errors."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from .errors import DeeplabError


def stage_main(fn: Callable[[], None]) -> Callable[[], None]:
    """Run a stage; a `DeeplabError` prints `error: <message>` and exits with status 2.

    Any other exception is a programming error and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper() -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            fn()
        except DeeplabError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper
