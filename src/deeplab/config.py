"""Loading and validating `params.yaml`: every key checked, every error names its key path."""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError

Validator = Callable[[str, Any], Any]


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _fail(path: str, expected: str, value: Any) -> None:
    raise ConfigError(f"{path}: expected {expected}, got {_show(value)}")


def number(low: float | None = None, high: float | None = None, *, positive: bool = False,
           integer: bool = False) -> Validator:
    """A number (int or float; int only if `integer`), optionally bounded."""
    kind = "integer" if integer else "number"
    if positive:
        expected = f"a positive {kind}"
    elif low is not None and high is not None:
        expected = f"a {kind} in [{low}, {high}]"
    elif low is not None:
        expected = f"a {kind} >= {low}"
    else:
        expected = f"a {kind}"

    def check(path: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(path, expected, value)
        if integer and not isinstance(value, int):
            _fail(path, expected, value)
        if isinstance(value, float) and not math.isfinite(value):
            _fail(path, expected, value)
        if (positive and value <= 0) or (low is not None and value < low) or (
                high is not None and value > high):
            _fail(path, expected, value)
        return value

    return check


def integer(low: int | None = None, high: int | None = None, *, positive: bool = False) -> Validator:
    return number(low, high, positive=positive, integer=True)


def boolean() -> Validator:
    def check(path: str, value: Any) -> Any:
        if not isinstance(value, bool):
            _fail(path, "true or false", value)
        return value
    return check


def string() -> Validator:
    def check(path: str, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            _fail(path, "a non-empty string", value)
        return value
    return check


def pattern(regex: str, expected: str) -> Validator:
    """A string that matches `regex` entirely."""
    compiled = re.compile(regex)

    def check(path: str, value: Any) -> Any:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            _fail(path, expected, value)
        return value
    return check


def backbone() -> Validator:
    """A backbone name; aliases are accepted and returned in their canonical spelling.

    The names are the model's own (`deeplab.model.backbones`), imported only when a model
    setting is validated: stages that read no model settings do not import the model.
    """
    def check(path: str, value: Any) -> Any:
        from .model.backbones import BACKBONE_ALIASES, BACKBONES

        value = choice(*BACKBONES, *BACKBONE_ALIASES)(path, value)
        return BACKBONE_ALIASES.get(value, value)
    return check


def choice(*options: Any) -> Validator:
    def check(path: str, value: Any) -> Any:
        if value not in options:
            _fail(path, "one of " + ", ".join(_show(o) for o in options), value)
        return value
    return check


def optional(inner: Validator) -> Validator:
    """`null` or whatever `inner` accepts."""
    def check(path: str, value: Any) -> Any:
        return None if value is None else inner(path, value)
    return check


def list_of(inner: Validator, min_len: int = 1, max_len: int | None = None,
            unique: bool = False) -> Validator:
    def check(path: str, value: Any) -> Any:
        if not isinstance(value, list):
            _fail(path, "a list", value)
        if len(value) < min_len or (max_len is not None and len(value) > max_len):
            span = f"{min_len}" if max_len == min_len else f"{min_len}..{max_len or 'any'}"
            _fail(path, f"a list of {span} items", value)
        if unique and len(set(map(repr, value))) != len(value):
            _fail(path, "a list without duplicates", value)
        return [inner(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return check


def variants(settings: dict[str, Validator]) -> Validator:
    """A mapping of variant names (lower-case letters, digits, `_`) to partial settings:
    each may give any subset of `settings`' keys."""
    def check(path: str, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            _fail(path, "a mapping of variant names to settings", value)
        out = {}
        for name, over in value.items():
            where = f"{path}.{name}"
            if not isinstance(name, str) or not name or name == "main" or \
                    not all(c.islower() or c.isdigit() or c == "_" for c in name):
                raise ConfigError(f"{where}: a variant name must be lower-case letters, digits "
                                  f"and '_' (and not 'main')")
            if not isinstance(over, dict) or not over:
                _fail(where, "a mapping of settings to change (e.g. {decoder: false})", over)
            _reject_unknown(over, settings, where)
            out[name] = {k: settings[k](f"{where}.{k}", v) for k, v in over.items()}
        return out
    return check


def _reject_unknown(raw: dict[str, Any], schema: dict[str, Any], path: str) -> None:
    unknown = sorted(set(raw) - set(schema), key=str)
    if unknown:
        key = unknown[0]
        hint = difflib.get_close_matches(str(key), list(schema), n=1)
        full = f"{path}.{key}" if path else str(key)
        raise ConfigError(f"{full}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                          + f"; allowed here: {', '.join(schema)}")


def validate(raw: Any, schema: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Check `raw` against a nested schema of validators; return the validated dict."""
    where = path or "params"
    if not isinstance(raw, dict):
        _fail(where, "a mapping of keys", raw)
    _reject_unknown(raw, schema, path)
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        full = f"{path}.{key}" if path else key
        if key not in raw:
            raise ConfigError(f"{full}: missing key")
        out[key] = validate(raw[key], spec, full) if isinstance(spec, dict) else spec(full, raw[key])
    return out


def _optimisation() -> dict[str, Any]:
    """Schema of one training schedule (shared by pretrain and finetune)."""
    return {
        "iterations": integer(positive=True),
        "batch_size": integer(positive=True),
        "crop_size": integer(low=16),
        "lr": number(positive=True),
        "lr_power": number(positive=True),
        "momentum": number(0.0, 0.999),
        "weight_decay": number(low=0.0),
        "scale_range": list_of(number(positive=True), 2, 2),
        "flip": boolean(),
        "checkpoint_every": integer(positive=True),
        "val_every": integer(low=0),
        "freeze_bn": boolean(),
    }


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

SCHEMA: dict[str, Any] = {
    "seed": integer(low=0),
    "data": {
        "source": choice("synthetic", "download", "local"),
        "voc_root": optional(string()),
        "sbd_root": optional(string()),
        "coco_root": optional(string()),
        "synthetic": {
            "seed": integer(low=0),
            "image_size": integer(low=32, high=1024),
            "coco_train_images": integer(positive=True),
            "coco_val_images": integer(positive=True),
            "voc_train_images": integer(positive=True),
            "voc_val_images": integer(positive=True),
            "sbd_images": integer(low=0),
        },
        "download": {
            "dir": string(),
            "mirror": optional(string()),
            "retries": integer(low=0, high=20),
            "timeout_s": number(positive=True),
        },
    },
    "preprocess": {
        "min_pixels": integer(low=0),
        "hard_classes": list_of(choice(*VOC_CLASSES[1:]), min_len=0, unique=True),
        "on_bad_sample": choice("error", "skip"),
        "workers": integer(low=0, high=256),
    },
    "model": {
        "backbone": backbone(),
        "output_stride": choice(8, 16, 32),
        "decoder": boolean(),
        "separable": boolean(),
        "aspp_channels": integer(positive=True),
        "decoder_channels": integer(positive=True),
        "low_level_channels": integer(positive=True),
        "multi_grid": optional(list_of(integer(positive=True), 1, 3)),
        "bn_momentum": number(0.0, 1.0),
        "dropout": number(0.0, 0.9),
        "pretrained_backbone": optional(string()),
    },
    "train": {
        "launcher": string(),
        "device": choice("auto", "cpu", "cuda"),
        "amp": choice("off", "bf16", "fp16"),
        "channels_last": boolean(),
        "compile": boolean(),
    },
    "runtime": {
        "workers": integer(low=0, high=64),
        "threads": integer(low=0, high=256),
        "log_every": integer(positive=True),
    },
    "pretrain": _optimisation(),
    "finetune": {
        **_optimisation(),
        "init": choice("pretrain", "imagenet", "scratch"),
        "bootstrap_factor": integer(positive=True),
    },
    "evaluate": {
        "output_strides": list_of(choice(8, 16, 32), unique=True),
        "scales": list_of(number(positive=True), unique=True),
        "flip": list_of(boolean(), unique=True),
        "trimap_widths": list_of(integer(positive=True), unique=True),
        "sample_images": integer(low=0, high=64),
        "madds_size": integer(low=32),
        "pad_to": optional(integer(low=33)),
    },
    "register": {
        "model_name": pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}",
                              "a name of letters, digits, '_', '.' and '-' (no quotes, spaces "
                              "or slashes: it goes into models:/ URIs and registry filters)"),
        "min_miou": number(0.0, 1.0),
        "inference": {
            "output_stride": choice(8, 16, 32),
            "scales": list_of(number(positive=True), unique=True),
            "flip": boolean(),
        },
    },
    "ablations": variants({
        "backbone": backbone(),
        "output_stride": choice(8, 16, 32),
        "decoder": boolean(),
        "separable": boolean(),
        "init": choice("pretrain", "imagenet", "scratch"),
    }),
    "mlflow": {
        "experiment": string(),
    },
}


def load_params(path: str | Path = "params.yaml", sections: tuple[str, ...] | None = None
                ) -> dict[str, Any]:
    """Read and validate a params file; raise ConfigError naming the offending key path.

    `sections` restricts validation to the sections a stage reads (plus `seed`), so that
    a broken section only fails the stages that depend on it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    if sections is None:
        return validate(raw, SCHEMA)
    wanted = ("seed",) + tuple(sections)
    _reject_unknown(raw, SCHEMA, "")  # a misspelled section is an error for every stage
    schema = {k: SCHEMA[k] for k in wanted}
    return validate({k: raw[k] for k in wanted if k in raw}, schema)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
