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
from pathlib import Path
from typing import (
    Annotated,
    Any,
    Literal,
    Optional,
    Self,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..model.choices import (
    BACKBONE_ALIASES,
    BACKBONES,
    OUTPUT_STRIDES,
    canonical_backbone,
)
from .errors import ConfigError

SOURCES = ("synthetic", "download", "local")
LAYOUTS = ("voc", "folder", "cityscapes")
INIT_KEYWORDS = ("pretrain", "imagenet", "scratch")


def _unique(values: list[Any]) -> list[Any]:
    if len(set(map(repr, values))) != len(values):
        raise PydanticCustomError("unique", "expected a list without duplicates")
    return values


def _ordered(values: list[float]) -> list[float]:
    if values != sorted(values):
        raise PydanticCustomError("ordered", "expected [low, high] with low <= high")
    return values


def _model_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", value) or ".." in value:
        raise PydanticCustomError(
            "model_name", "expected a name of letters, digits, '_', '.' and '-', at most 100 "
            "characters, no '..' (no quotes, spaces or slashes: it goes into models:/ URIs and "
            "registry filters)")
    return value


def _experiment_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9 _.,:@+/-]{0,199}", value) or value != value.strip() \
            or ".." in value.split("/") or "//" in value:
        raise PydanticCustomError(
            "experiment_name", "expected a name of letters, digits, spaces and '_.,:@+/-', at most "
            "200 characters, starting with a letter, digit or '_', with no '..' path part and no "
            "control characters (it is shown in the UI and may name folders)")
    return value


def _class_name(value: str) -> str:
    if not value.strip() or value != value.strip() or any(ord(c) < 32 for c in value):
        raise PydanticCustomError("class_name", "expected a class name without leading or "
                                  "trailing spaces or control characters")
    return value


def _init(value: str) -> str:
    if value in INIT_KEYWORDS or value.startswith(("models:/", "runs:/")) or \
            value.endswith((".pt", ".pth")):
        return value
    raise PydanticCustomError("init", "expected pretrain, imagenet, scratch, a model file (.pt) "
                              "or a models:/ URI")


def _aliases(data: Any, aliases: dict[str, str]) -> Any:
    """Accept an older key name for a renamed one (both given: an error)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for old, new in aliases.items():
        if old in out:
            if new in out and out[new] is not None and out[old] is not None:
                raise PydanticCustomError("alias", "{old} and {new} are the same setting; keep "
                                          "{new}", {"old": old, "new": new})
            value = out.pop(old)
            out[new] = value if out.get(new) is None else out[new]
    return out


def _variant_name(value: str) -> str:
    if not value or value == "main" or not all(c.islower() or c.isdigit() or c == "_" for c in value):
        raise PydanticCustomError("variant_name", "a variant name must be lower-case letters, "
                                  "digits and '_' (and not 'main')")
    return value


# Bounds: values beyond them are typos (a crash or a run that never ends), not settings.
MAX_SEED = 2**32 - 1          # numpy's legacy seeding (np.random.seed) takes 32 bits
MAX_ITERATIONS = 10_000_000   # the paper trains 30k iterations
MAX_SIZE = 8192               # pixels: crops, padding, image sizes (Cityscapes pads to 2049)
MAX_SCALE = 4.0               # input scales (the paper: 0.5 to 1.75)
MIN_SCALE = 0.1

Count = Annotated[int, Field(gt=0, le=10_000_000)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Scale = Annotated[float, Field(ge=MIN_SCALE, le=MAX_SCALE)]
Channels = Annotated[int, Field(gt=0, le=4096)]
Name = Annotated[str, Field(min_length=1, max_length=4096)]
OutputStride = Literal[OUTPUT_STRIDES]  # type: ignore[valid-type]
Backbone = Annotated[Literal[BACKBONES + tuple(BACKBONE_ALIASES)],  # type: ignore[valid-type]
                     AfterValidator(canonical_backbone)]
Init = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_init)]
ClassName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_class_name)]
Colour = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]
Scales = Annotated[list[Scale], Field(min_length=1, max_length=16), AfterValidator(_unique)]
PadTo = Annotated[int, Field(ge=33, le=MAX_SIZE)]


class Section(BaseModel):
    """A params section: no unknown keys, no type coercion ("1" is not 1), immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False,
                              validate_by_name=True, validate_by_alias=True)

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied, validated like the params file."""
        return _validate(type(self), {**self.model_dump(exclude_unset=True), **changes})


class SyntheticData(Section):
    """The built-in generator: the target dataset in `data.layout` with `data.classes`, and
    COCO-format pretraining data (none when `coco_train_images` is 0)."""

    seed: Seed
    image_size: Annotated[int, Field(ge=32, le=1024)]
    coco_train_images: Annotated[int, Field(ge=0, le=1_000_000)]
    coco_val_images: Annotated[int, Field(ge=0, le=1_000_000)]
    train_images: Annotated[int, Field(gt=0, le=1_000_000)]
    val_images: Annotated[int, Field(gt=0, le=1_000_000)]
    sbd_images: Annotated[int, Field(ge=0, le=1_000_000)]

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return _aliases(data, {"voc_train_images": "train_images", "voc_val_images": "val_images"})

    @model_validator(mode="after")
    def _coco_both_or_none(self) -> Self:
        if (self.coco_train_images == 0) != (self.coco_val_images == 0):
            raise PydanticCustomError("coco", "coco_train_images and coco_val_images are both 0 "
                                      "(no COCO pretraining) or both positive")
        return self


class DownloadSettings(Section):
    dir: Name
    mirror: Optional[Name]
    retries: Annotated[int, Field(ge=0, le=20)]
    timeout_s: Annotated[float, Field(gt=0, le=3600)]


class DataConfig(Section):
    """Where the data comes from and what it holds: one description read by every stage."""

    source: Literal[SOURCES]  # type: ignore[valid-type]
    layout: Literal[LAYOUTS] = "voc"  # type: ignore[valid-type]
    root: Optional[Name] = None
    sbd_root: Optional[Name] = None
    coco_root: Optional[Name] = None
    classes: Optional[Annotated[list[ClassName], Field(min_length=2, max_length=255),
                                AfterValidator(_unique)]] = None
    ignore_index: Annotated[int, Field(ge=0, le=255)] = 255
    palette: Optional[Annotated[list[Colour], Field(min_length=2, max_length=255)]] = None
    coco_map: Optional[dict[Annotated[str, Field(min_length=1)], ClassName]] = None
    synthetic: SyntheticData
    download: DownloadSettings

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return _aliases(data, {"voc_root": "root"})

    @property
    def uses_coco(self) -> bool:
        """Whether there is COCO data to pretrain on."""
        if self.source == "synthetic":
            return self.synthetic.coco_train_images > 0
        if self.source == "download":
            return self.layout == "voc"
        return self.coco_root is not None


class PreprocessConfig(Section):
    min_pixels: Annotated[int, Field(ge=0, le=MAX_SIZE * MAX_SIZE)]
    hard_classes: Optional[Annotated[list[ClassName], AfterValidator(_unique)]]
    on_bad_sample: Literal["error", "skip"]
    workers: Annotated[int, Field(ge=0, le=256)]


class ModelConfig(Section):
    backbone: Backbone
    output_stride: OutputStride
    decoder: bool
    separable: bool
    aspp_channels: Channels
    decoder_channels: Channels
    low_level_channels: Channels
    multi_grid: Optional[Annotated[list[Annotated[int, Field(gt=0, le=16)]],
                                   Field(min_length=1, max_length=3)]]
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
    log_every: Count


class Schedule(Section):
    """One training schedule (pretrain; finetune adds its init and bootstrapping)."""

    iterations: Annotated[int, Field(gt=0, le=MAX_ITERATIONS)]
    batch_size: Annotated[int, Field(gt=0, le=4096)]
    crop_size: Annotated[int, Field(ge=16, le=MAX_SIZE)]
    lr: Annotated[float, Field(gt=0, le=10)]
    lr_power: Annotated[float, Field(gt=0, le=10)]
    momentum: Annotated[float, Field(ge=0, le=0.999)]
    weight_decay: Annotated[float, Field(ge=0, le=1)]
    scale_range: Annotated[list[Scale], Field(min_length=2, max_length=2),
                           AfterValidator(_ordered)]
    flip: bool
    checkpoint_every: Annotated[int, Field(gt=0, le=MAX_ITERATIONS)]
    val_every: Annotated[int, Field(ge=0, le=MAX_ITERATIONS)]
    freeze_bn: bool

    @property
    def repeat_hard(self) -> int:
        """How many times a hard image appears per epoch (1: no bootstrapping)."""
        return 1


class FinetuneSchedule(Schedule):
    init: Init
    bootstrap_factor: Annotated[int, Field(gt=0, le=100)]

    @property
    def repeat_hard(self) -> int:
        return self.bootstrap_factor


class EvaluateConfig(Section):
    output_strides: Annotated[list[OutputStride], Field(min_length=1), AfterValidator(_unique)]
    scales: Scales
    flip: Annotated[list[bool], Field(min_length=1), AfterValidator(_unique)]
    trimap_widths: Annotated[list[Annotated[int, Field(gt=0, le=256)]], Field(min_length=1),
                             AfterValidator(_unique)]
    sample_images: Annotated[int, Field(ge=0, le=64)]
    madds_size: Annotated[int, Field(ge=32, le=MAX_SIZE)]
    pad_to: Optional[PadTo]


class InferenceConfig(Section):
    output_stride: OutputStride
    scales: Scales
    flip: bool


class StoredStrategy(InferenceConfig):
    """The strategy file a registered model carries (`register.inference` + padding)."""

    pad_to: Optional[PadTo] = None


class InferenceOverrides(Section):
    """Command-line changes to a model's strategy (`predict`, `export`); None keeps it."""

    output_stride: Optional[OutputStride] = None
    scales: Optional[Scales] = None
    flip: Optional[bool] = None


class RegisterConfig(Section):
    model_name: Annotated[str, AfterValidator(_model_name)]
    min_miou: Annotated[float, Field(ge=0, le=1)]
    promote: Literal["if_better", "never", "always"] = "if_better"
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
    experiment: Annotated[str, AfterValidator(_experiment_name)]


Variants = dict[Annotated[str, AfterValidator(_variant_name)], VariantOverrides]


class Params(Section):
    """The whole params file; sections a stage does not read are `None`. The `register`
    section is the attribute `registration` (`register` would shadow pydantic's own)."""

    seed: Seed
    data: Optional[DataConfig] = None
    preprocess: Optional[PreprocessConfig] = None
    model: Optional[ModelConfig] = None
    train: Optional[TrainConfig] = None
    runtime: Optional[RuntimeConfig] = None
    pretrain: Optional[Schedule] = None
    finetune: Optional[FinetuneSchedule] = None
    evaluate: Optional[EvaluateConfig] = None
    registration: Optional[RegisterConfig] = Field(default=None, alias="register")
    ablations: Annotated[Optional[Variants], BeforeValidator(lambda v: {} if v is None else v)] = None
    mlflow: Optional[MlflowConfig] = None

    def as_dict(self) -> dict[str, Any]:
        """The loaded sections as plain data, keyed as in params.yaml (for MLflow params and
        checkpoint fingerprints)."""
        return self.model_dump(exclude_unset=True, by_alias=True)

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
SECTIONS = tuple(field.alias or name for name, field in Params.model_fields.items() if name != "seed")


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
            fields = {field.alias or name: field for name, field in tp.model_fields.items()}
            if not parts:
                return list(fields)
            tp = fields[parts.pop(0)].annotation
        elif get_origin(tp) in (dict, list) and parts:
            parts.pop(0)
            tp = get_args(tp)[-1]
        else:
            return []


# Errors this module raises itself (PydanticCustomError); the rest keep pydantic's wording.
OUR_KINDS = {"unique", "ordered", "model_name", "experiment_name", "variant_name", "class_name",
             "init", "alias", "coco", "variant"}
WHOLE_SECTION_KINDS = {"alias", "coco", "variant"}  # about a mapping: its value is not shown


def _message(root: type[BaseModel], err: dict[str, Any]) -> str:
    """One line for one pydantic error: the key path, pydantic's own message (ours for the
    checks defined here), and the value given. Unknown keys get a "did you mean"."""
    loc, kind = tuple(err["loc"]), err["type"]
    path = _path(loc)
    if kind == "missing":
        return f"{path}: missing key"
    if kind == "extra_forbidden":
        allowed = _keys_at(root, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        return (f"{path}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; allowed here: {', '.join(allowed)}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):  # pydantic names our classes
        return f"{path}: expected a mapping of keys, got {_show(err['input'])}"
    if kind in WHOLE_SECTION_KINDS or (loc and loc[-1] == "[key]"):
        return f"{path}: {err['msg']}"
    return f"{path}: {err['msg']}, got {_show(err['input'])}"


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


def validate_options(model: type[SectionT], options: dict[str, Any], option_prefix: str = "--"
                     ) -> SectionT:
    """`model` built from command-line options (None = not given); ConfigError names each bad
    option as `--name` (or with `option_prefix`), with the schema's own rules and bounds."""
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            line = _message(model, err)
            key = str(err["loc"][0]) if err["loc"] else ""
            if key and option_prefix:
                line = option_prefix + key.replace("_", "-") + line[len(key):]
            lines.append(line)
        raise ConfigError("\n".join(lines)) from None


def _validate(model: type[SectionT], data: dict[str, Any]) -> SectionT:
    """`model` built from `data`; ConfigError lists every fault, one line each, with its path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_message(model, e) for e in exc.errors())) from None


MAX_YAML_VALUES = 100_000  # after alias expansion; params.yaml holds about 200


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys (naming both lines)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys: the schema refuses them
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{self.name}: key '{key}' appears twice in one mapping "
                                  f"(lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """How many values `node` stands for once every alias is expanded (stops past `limit`)."""
    memo: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) in memo:
            return memo[id(n)]
        memo[id(n)] = limit + 1  # a cycle counts as too big
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in n.value)
        else:
            total = 1
        memo[id(n)] = total = min(total, limit + 1)
        return total

    return size(node)


def read_yaml(path: Path) -> Any:
    """A YAML file as plain data: duplicate keys and alias bombs are errors naming the file."""
    text = path.read_text()
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_VALUES) > MAX_YAML_VALUES:
            raise ConfigError(f"{path}: its aliases expand to more than {MAX_YAML_VALUES:,} values "
                              f"(a 'billion laughs' file?); refusing to read it")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


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


def main(argv: list[str] | None = None) -> int:
    """`python -m deeplab.core.config [params.yaml ...]`: check whole params files; exit 2 on faults."""
    import sys

    paths = (sys.argv[1:] if argv is None else argv) or ["params.yaml"]
    status = 0
    for path in paths:
        try:
            load_params(path)
        except ConfigError as exc:
            for line in str(exc).splitlines():
                print(f"error: {line if line.startswith(str(path)) else f'{path}: {line}'}",
                      file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
