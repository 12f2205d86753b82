"""Paper recipes (`recipes/*.yaml`): partial params files with each value's source.

`python -m deeplab.sweep.recipe recipes/resnet101_voc_coco.yaml` checks the recipe against the
params schema (merged onto `params.yaml`) and prints it as `dvc exp run` overrides; with
`--run` it starts that experiment, passing any further arguments on:

    python -m deeplab.sweep.recipe recipes/resnet101_voc_coco.yaml --run -S data.source=local ...
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from ..core.config import flatten, parse_params
from ..core.errors import ConfigError, DeeplabError
from ..core.safe_yaml import read_yaml
from ..core.schema import Params


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file: a nested mapping of params keys to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe not found")
    recipe = read_yaml(path)
    if not isinstance(recipe, dict) or not recipe:
        raise ConfigError(f"{path}: a recipe is a mapping of params sections")
    return recipe


def apply_recipe(params: Params, recipe: dict[str, Any], path: str = "") -> Params:
    """`params` with the recipe's values put in (sections merged key by key), validated."""
    def merge(base: Any, over: Any, where: str) -> Any:
        if isinstance(over, dict) and isinstance(base, dict):
            out = dict(base)
            for key, value in over.items():
                full = f"{where}.{key}" if where else str(key)
                out[key] = merge(base.get(key), value, full) if key in base else value
            return out
        return copy.deepcopy(over)

    merged = merge(params.as_dict(), recipe, "")
    try:
        return parse_params(merged)
    except ConfigError as exc:
        raise ConfigError(f"{path or 'recipe'}: {exc}") from None


def overrides(recipe: dict[str, Any]) -> list[str]:
    """`-S key=value` arguments for `dvc exp run`; values in compact JSON/YAML flow form."""
    args = []
    for key, value in flatten(recipe).items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if any(c.isspace() for c in text):
            raise ConfigError(f"{key}: a value with spaces cannot go on the command line: {text!r}")
        args += ["-S", f"{key}={text}"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab.sweep.recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--run", action="store_true", help="run `dvc exp run` with the overrides")
    args, extra = parser.parse_known_args(argv)
    try:
        recipe = load_recipe(args.recipe)
        from ..core.config import load_params

        apply_recipe(load_params(args.params), recipe, str(args.recipe))
        command = ["dvc", "exp", "run", *overrides(recipe), *extra]
    except DeeplabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.run:
        os.execvp(command[0], command)
    print(shlex.join(command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
