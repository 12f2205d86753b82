"""`params.yaml` as one typed config (pydantic v2): every key checked, every error names its
key path and what was expected.

Each section is a frozen model; a stage reads the sections it depends on (`load_params(...,
sections=...)`) and the others stay `None`, so a broken section only fails the stages that
read it. The choices the network accepts (backbones, output strides) come from
`deeplab.model.choices`, the one place they are defined.
"""

from __future__ import annotations

import difflib
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Self, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      ValidationError, model_validator)
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .model.choices import BACKBONE_ALIASES, BACKBONES, OUTPUT_STRIDES, canonical_backbone

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
SOURCES = ("synthetic", "download", "local")
INITS = ("pretrain", "imagenet", "scratch")


def _unique(values: list[Any]) -> list[Any]:
    if len(set(map(repr, values))) != len(values):
        raise PydanticCustomError("unique", "expected a list without duplicates")
    return values


def _ordered(values: list[float]) -> list[float]:
    if values != sorted(values):
        raise PydanticCustomError("ordered", "expected [low, high] with low <= high")
    return values


def _model_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", value):
        raise PydanticCustomError(
            "model_name", "expected a name of letters, digits, '_', '.' and '-' (no quotes, "
            "spaces or slashes: it goes into models:/ URIs and registry filters)")
    return value


def _variant_name(value: str) -> str:
    if not value or value == "main" or not all(c.islower() or c.isdigit() or c == "_" for c in value):
        raise PydanticCustomError("variant_name", "a variant name must be lower-case letters, "
                                  "digits and '_' (and not 'main')")
    return value


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Name = Annotated[str, Field(min_length=1)]
OutputStride = Literal[OUTPUT_STRIDES]  # type: ignore[valid-type]
Backbone = Annotated[Literal[BACKBONES + tuple(BACKBONE_ALIASES)],  # type: ignore[valid-type]
                     AfterValidator(canonical_backbone)]
Init = Literal[INITS]  # type: ignore[valid-type]
VocClass = Literal[VOC_CLASSES[1:]]  # type: ignore[valid-type]
UniqueFloats = Annotated[list[PositiveFloat], Field(min_length=1), AfterValidator(_unique)]


class Section(BaseModel):
    """A params section: no unknown keys, no type coercion ("1" is not 1), immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied, validated like the params file."""
        return _validate(type(self), {**self.model_dump(exclude_unset=True), **changes})


class SyntheticData(Section):
    seed: NonNegativeInt
    image_size: Annotated[int, Field(ge=32, le=1024)]
    coco_train_images: PositiveInt
    coco_val_images: PositiveInt
    voc_train_images: PositiveInt
    voc_val_images: PositiveInt
    sbd_images: NonNegativeInt


class DownloadSettings(Section):
    dir: Name
    mirror: Optional[Name]
    retries: Annotated[int, Field(ge=0, le=20)]
    timeout_s: PositiveFloat


class DataConfig(Section):
    source: Literal[SOURCES]  # type: ignore[valid-type]
    voc_root: Optional[Name]
    sbd_root: Optional[Name]
    coco_root: Optional[Name]
    synthetic: SyntheticData
    download: DownloadSettings


class PreprocessConfig(Section):
    min_pixels: NonNegativeInt
    hard_classes: Annotated[list[VocClass], AfterValidator(_unique)]
    on_bad_sample: Literal["error", "skip"]
    workers: Annotated[int, Field(ge=0, le=256)]


class ModelConfig(Section):
    backbone: Backbone
    output_stride: OutputStride
    decoder: bool
    separable: bool
    aspp_channels: PositiveInt
    decoder_channels: PositiveInt
    low_level_channels: PositiveInt
    multi_grid: Optional[Annotated[list[PositiveInt], Field(min_length=1, max_length=3)]]
    bn_momentum: Annotated[float, Field(ge=0, le=1)]
    dropout: Annotated[float, Field(ge=0, le=0.9)]
    pretrained_backbone: Optional[Name]

    def network_kwargs(self) -> dict[str, Any]:
        """The `DeepLabV3Plus` arguments these settings describe (no weights file)."""
        return self.model_dump(exclude={"pretrained_backbone"})


class TrainConfig(Section):
    launcher: Name
    device: Literal["auto", "cpu", "cuda"]
    amp: Literal["off", "bf16", "fp16"]
    channels_last: bool
    compile: bool


class RuntimeConfig(Section):
    workers: Annotated[int, Field(ge=0, le=64)]
    threads: Annotated[int, Field(ge=0, le=256)]
    log_every: PositiveInt


class Schedule(Section):
    """One training schedule (pretrain; finetune adds its init and bootstrapping)."""

    iterations: PositiveInt
    batch_size: PositiveInt
    crop_size: Annotated[int, Field(ge=16)]
    lr: PositiveFloat
    lr_power: PositiveFloat
    momentum: Annotated[float, Field(ge=0, le=0.999)]
    weight_decay: Annotated[float, Field(ge=0)]
    scale_range: Annotated[list[PositiveFloat], Field(min_length=2, max_length=2),
                           AfterValidator(_ordered)]
    flip: bool
    checkpoint_every: PositiveInt
    val_every: NonNegativeInt
    freeze_bn: bool

    @property
    def repeat_hard(self) -> int:
        """How many times a hard image appears per epoch (1: no bootstrapping)."""
        return 1


class FinetuneSchedule(Schedule):
    init: Init
    bootstrap_factor: PositiveInt

    @property
    def repeat_hard(self) -> int:
        return self.bootstrap_factor


class EvaluateConfig(Section):
    output_strides: Annotated[list[OutputStride], Field(min_length=1), AfterValidator(_unique)]
    scales: UniqueFloats
    flip: Annotated[list[bool], Field(min_length=1), AfterValidator(_unique)]
    trimap_widths: Annotated[list[PositiveInt], Field(min_length=1), AfterValidator(_unique)]
    sample_images: Annotated[int, Field(ge=0, le=64)]
    madds_size: Annotated[int, Field(ge=32)]
    pad_to: Optional[Annotated[int, Field(ge=33)]]


class InferenceConfig(Section):
    output_stride: OutputStride
    scales: UniqueFloats
    flip: bool


class RegisterConfig(Section):
    model_name: Annotated[str, AfterValidator(_model_name)]
    min_miou: Annotated[float, Field(ge=0, le=1)]
    inference: InferenceConfig


class VariantOverrides(Section):
    """One ablation variant: the model settings and finetune init it changes."""

    backbone: Optional[Backbone] = None
    output_stride: Optional[OutputStride] = None
    decoder: Optional[bool] = None
    separable: Optional[bool] = None
    init: Optional[Init] = None

    @model_validator(mode="before")
    @classmethod
    def _something_to_change(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data:
            raise PydanticCustomError("variant", "expected a mapping of settings to change "
                                      "(e.g. {decoder: false})")
        unset = [key for key, value in data.items() if value is None]
        if unset:
            raise PydanticCustomError("variant", "{key}: expected a value (leave the key out to "
                                      "keep the main model's setting)", {"key": unset[0]})
        return data

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class MlflowConfig(Section):
    experiment: Name


Variants = dict[Annotated[str, AfterValidator(_variant_name)], VariantOverrides]


# The `register` section shadows `BaseModel.register`, ABCMeta's class method, which
# instances never reach: pydantic's warning about it is silenced for this definition only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", 'Field name "register" in "Params" shadows', UserWarning)

    class Params(Section):
        """The whole params file; sections a stage does not read are `None`."""

        seed: NonNegativeInt
        data: Optional[DataConfig] = None
        preprocess: Optional[PreprocessConfig] = None
        model: Optional[ModelConfig] = None
        train: Optional[TrainConfig] = None
        runtime: Optional[RuntimeConfig] = None
        pretrain: Optional[Schedule] = None
        finetune: Optional[FinetuneSchedule] = None
        evaluate: Optional[EvaluateConfig] = None
        register: Optional[RegisterConfig] = None
        ablations: Annotated[Optional[Variants], BeforeValidator(lambda v: {} if v is None else v)] = None
        mlflow: Optional[MlflowConfig] = None

        def as_dict(self) -> dict[str, Any]:
            """The loaded sections as plain data (for MLflow params and checkpoint fingerprints)."""
            return self.model_dump(exclude_unset=True)

        def variant(self, name: str) -> "Params":
            """The params of ablation variant `name`: `model` and `finetune.init` overridden."""
            variants = self.ablations or {}
            if name not in variants:
                raise ConfigError(f"ablations.{name}: no such variant (defined: "
                                  f"{', '.join(variants) or 'none'})")
            changes = variants[name].changes()
            update: dict[str, Any] = {}
            if "init" in changes:
                update["finetune"] = self.finetune.replace(init=changes.pop("init"))
            if changes:
                update["model"] = self.model.replace(**changes)
            return self.replace(**update)


SectionT = TypeVar("SectionT", bound=BaseModel)
SECTIONS = tuple(name for name in Params.model_fields if name != "seed")


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "params"


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _unwrap(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) is Union:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _keys_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a mapping at `loc` (below `root`) may hold (for "did you mean")."""
    tp: Any = root
    parts = list(loc)
    while True:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not parts:
                return list(tp.model_fields)
            tp = tp.model_fields[parts.pop(0)].annotation
        elif get_origin(tp) in (dict, list) and parts:
            parts.pop(0)
            tp = get_args(tp)[-1]
        else:
            return []


def _message(root: type[BaseModel], err: dict[str, Any]) -> str:
    loc, kind, msg = tuple(err["loc"]), err["type"], err["msg"]
    path = _path(loc)
    if kind == "missing":
        return f"{path}: missing key"
    if kind == "extra_forbidden":
        allowed = _keys_at(root, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        return (f"{path}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; allowed here: {', '.join(allowed)}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = "expected a mapping of keys"
    elif msg.startswith("Input should be "):
        rest = msg[len("Input should be "):]
        msg = "expected " + ("a value " + rest if rest.startswith(("greater", "less")) else rest)
    elif kind == "string_too_short":
        msg = "expected a non-empty string"
    elif kind in ("too_short", "too_long"):
        ctx = err["ctx"]
        msg = (f"expected at least {ctx['min_length']}" if kind == "too_short"
               else f"expected at most {ctx['max_length']}") + " items"
    if kind == "variant" or (loc and loc[-1] == "[key]"):
        return f"{path}: {msg}"
    return f"{path}: {msg}, got {_show(err['input'])}"


def parse_params(raw: Any, sections: tuple[str, ...] | None = None) -> Params:
    """Validate a params mapping (all sections, or only `sections`); ConfigError lists every
    fault, one per line, each with its key path."""
    if not isinstance(raw, dict):
        raise ConfigError("params: expected a mapping of sections at the top level")
    wanted = SECTIONS if sections is None else tuple(sections)
    missing = [name for name in ("seed", *wanted) if name not in raw]
    if missing:
        raise ConfigError("\n".join(f"{name}: missing key" for name in missing))
    # Sections a stage does not read are left out; unknown top-level keys stay in, so a
    # misspelled section is an error for every stage.
    return _validate(Params, {k: v for k, v in raw.items() if k not in SECTIONS or k in wanted})


def _validate(model: type[SectionT], data: dict[str, Any]) -> SectionT:
    """`model` built from `data`; ConfigError lists every fault, one line each, with its path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_message(model, e) for e in exc.errors())) from None


def load_params(path: str | Path = "params.yaml", sections: tuple[str, ...] | None = None
                ) -> Params:
    """Read and validate a params file; ConfigError names the file and offending key paths.

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
    return parse_params(raw, sections)


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
