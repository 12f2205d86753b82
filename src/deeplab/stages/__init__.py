"""The DVC stages, one module each and all of one shape (`dvc.yaml` runs `pipeline/<name>.py`,
which hands its module to `main`):

- `SECTIONS`: the `params.yaml` sections it reads (validated before anything runs);
- `PATHS`: what it reads and writes, given by `dvc.yaml` as `--name PATH` (`OPTIONAL` ones may
  be left out; `OPTIONS` are plain `--name VALUE` settings such as a variant's name);
- `run(params, paths) -> str`: the work, returning the one line printed at the end.

A new stage is its module here, its entry in `dvc.yaml` (with its thin `pipeline/` script) and
its params section; the tests find stages from `dvc.yaml`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

from ..core.cli import run_command


def parse_paths(stage: ModuleType, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The stage's `PATHS` (`--name PATH`) and `OPTIONS` from the command line."""
    parser = argparse.ArgumentParser(prog=stage.__name__, description=stage.__doc__)
    for name in getattr(stage, "OPTIONS", ()):
        parser.add_argument(f"--{name}", default=None)
    optional = getattr(stage, "OPTIONAL", ())
    for name in (*stage.PATHS, *optional):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=Path,
                            required=name not in optional, default=None)
    return parser.parse_args(argv)


def main(stage: ModuleType, argv: Sequence[str] | None = None) -> None:
    """Run `stage` as a command: logging on, its paths and params read, `run` called and its
    line printed; a fault the user can fix is one `error:` line and exit status 2."""
    from ..core.config import load_params

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def go() -> None:
        paths = parse_paths(stage, argv)
        print(stage.run(load_params(sections=stage.SECTIONS), paths))

    status = run_command(go)
    if status:
        sys.exit(status)
