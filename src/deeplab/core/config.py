"""Loading `params.yaml`: read safely (`safe_yaml`), validate the sections a stage reads
against the schema (`schema`), and report every fault at once (`validation`).

Each section is a frozen model; a stage reads the sections it depends on (`load_params(...,
sections=...)`) and the others stay `None`, so a broken section only fails the stages that
read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError
from .safe_yaml import read_yaml
from .schema import OPTIONAL, SECTIONS, Params
from .validation import validate


def parse_params(raw: Any, sections: tuple[str, ...] | None = None) -> Params:
    """Validate a params mapping (all sections, or only `sections`); ConfigError lists every
    fault, one per line, each with its key path."""
    if not isinstance(raw, dict):
        raise ConfigError("params: expected a mapping of sections at the top level")
    wanted = SECTIONS if sections is None else tuple(sections)
    missing = [name for name in ("seed", *wanted) if name not in raw and name not in OPTIONAL]
    if missing:
        raise ConfigError("\n".join(f"{name}: missing key" for name in missing))
    # Sections a stage does not read are left out; unknown top-level keys stay in, so a
    # misspelled section is an error for every stage.
    return validate(Params, {k: v for k, v in raw.items() if k not in SECTIONS or k in wanted})



def load_params(path: str | Path = "params.yaml", sections: tuple[str, ...] | None = None
                ) -> Params:
    """Read and validate a params file; ConfigError names the file and offending key paths.

    `sections` restricts validation to the sections a stage reads (plus `seed`), so that
    a broken section only fails the stages that depend on it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw, sections)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}, "c": {}}` -> `{"a.b": 1, "c": {}}` (MLflow params, `-S` overrides)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out

