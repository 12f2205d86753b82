"""A sweep's search space (`params.yaml` `sweep.space`): every key checked against the params
schema before the first trial, and a trial's values as `dvc exp run -S` overrides.

A trial trains the main model only: unless the space names an `ablations.*` key, the trial
drops every ablation variant (`-S '~ablations.<name>'`), so a trial costs one training."""

from __future__ import annotations

import copy
from typing import Any

from ..core.config import parse_params
from ..core.errors import ConfigError
from ..core.schema import SearchRange, SweepConfig


def _set(tree: dict[str, Any], key: str, value: Any) -> bool:
    """`tree` with the dotted `key` set to `value`; whether the key was there already (a new
    one is for the schema to judge: an ablation may set a setting it did not name). KeyError
    when a parent does not exist."""
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise KeyError(key)
        node = node[part]
    existed = last in node
    node[last] = value
    return existed


def main_only(raw: dict[str, Any], cfg: SweepConfig) -> list[str]:
    """The ablation variants a trial drops (all, unless the space sweeps an `ablations.*` key)."""
    if any(key.startswith("ablations.") for key in cfg.space):
        return []
    return sorted((raw.get("ablations") or {}).keys())


def candidates(spec: SearchRange | list[Any]) -> list[Any]:
    """The values that bound a key's range (its ends), or every choice."""
    return list(spec) if isinstance(spec, list) else [spec.low, spec.high]


def check_space(raw: dict[str, Any], cfg: SweepConfig) -> None:
    """ConfigError, one line per fault, when a key of the space is not a params key or one of
    its values (a range's ends, every choice) is outside the params schema's bounds."""
    faults = []
    dropped = main_only(raw, cfg)
    for key, spec in cfg.space.items():
        if key.split(".")[0] in ("sweep", "mlflow", "seed") and key != "seed":
            faults.append(f"sweep.space.{key}: not a setting a trial can change")
            continue
        for value in candidates(spec):
            trial = copy.deepcopy(raw)
            trial.pop("sweep", None)
            for name in dropped:
                trial["ablations"].pop(name, None)
            try:
                existed = _set(trial, key, value)
            except KeyError:
                faults.append(f"sweep.space.{key}: not a key of params.yaml")
                break
            try:
                parse_params(trial)
            except ConfigError as exc:
                reason = str(exc).splitlines()[0]
                faults.append(f"sweep.space.{key}: not a key of params.yaml ({reason})"
                              if not existed and "unknown key" in reason else
                              f"sweep.space.{key}: {value!r} is refused ({reason})")
                break
    if faults:
        raise ConfigError("\n".join(faults))


def suggest(trial: Any, cfg: SweepConfig) -> dict[str, Any]:
    """A trial's value for every key of the space (Optuna's suggest_* by the spec's kind)."""
    values = {}
    for key, spec in cfg.space.items():
        if isinstance(spec, list):
            values[key] = trial.suggest_categorical(key, spec)
        elif spec.step is not None or (isinstance(spec.low, int) and isinstance(spec.high, int)):
            values[key] = trial.suggest_int(key, int(spec.low), int(spec.high),
                                            step=spec.step or 1, log=spec.log)
        else:
            values[key] = trial.suggest_float(key, float(spec.low), float(spec.high), log=spec.log)
    return values


def overrides(values: dict[str, Any], dropped: list[str]) -> list[str]:
    """`dvc exp run` arguments setting `values` (YAML literals) and dropping `dropped`."""
    import yaml

    args = []
    for key, value in values.items():
        literal = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        args += ["-S", f"{key}={literal}"]
    for name in dropped:
        args += ["-S", f"~ablations.{name}"]
    return args


def grid(cfg: SweepConfig) -> dict[str, list[Any]]:
    """The grid sampler's values of every key (lists, and integer ranges with a step)."""
    return {key: list(spec) if isinstance(spec, list) else
            list(range(int(spec.low), int(spec.high) + 1, spec.step or 1))
            for key, spec in cfg.space.items()}
