"""The schema of `params.yaml`, the file people edit: one frozen, strict pydantic model per
section, with the bounds and choices of every key.

The choices of every extension axis come from its own catalogue, the one place each is
defined (`deeplab.core.choices`: plain data, no torch): backbones and output strides, data sources
and layouts, losses and their grammar, runtimes, precisions and deployed formats. Loading a file is
`deeplab.core.config`; the messages are `deeplab.core.validation`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .choices.backbones import OUTPUT_STRIDES, canonical_backbone
from .choices.data import LAYOUTS, SOURCES
from .choices.losses import parse_loss
from .choices.runtimes import FORMATS, PRECISIONS, RUNTIMES, check_format
from .errors import ConfigError
from .validation import validate

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


def _loss(value: str) -> str:
    try:
        parse_loss(value)
    except ValueError as exc:
        raise PydanticCustomError("loss", "{reason}", {"reason": str(exc)}) from None
    return value


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
# one of BACKBONES (or an alias), or `timm:<name>` (any timm encoder)
Backbone = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(canonical_backbone)]
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
        return validate(type(self), {**self.model_dump(exclude_unset=True), **changes})


class RareClass(Section):
    """An imbalanced profile: the objects of class `name` drawn `scale` times their size."""

    name: ClassName
    scale: Annotated[float, Field(gt=0, le=1)]


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
    rare: Optional[RareClass] = None
    pool_images: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    pool_novel: Annotated[float, Field(ge=0, le=1)] = 0.0

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


class CocoFiles(Section):
    """A COCO-JSON dataset's files, below `data.root`, when they are not in one of the two
    arrangements found by themselves."""

    train_images: Name
    train_annotations: Name
    val_images: Name
    val_annotations: Name


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
    reduce_zero_label: Optional[bool] = None
    coco_files: Optional[CocoFiles] = None
    unlabeled_root: Optional[Name] = None
    synthetic: SyntheticData
    download: DownloadSettings

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return _aliases(data, {"voc_root": "root"})


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
    amp: Literal["auto", "off", "bf16", "fp16"]
    channels_last: bool | Literal["auto"]
    compile: bool


class RuntimeConfig(Section):
    workers: Annotated[int, Field(ge=0, le=64)]
    threads: Annotated[int, Field(ge=0, le=256)]
    log_every: Count


class EarlyStop(Section):
    """Stop after `patience` validations without a val mIoU gain above `min_delta`."""

    patience: Annotated[int, Field(gt=0, le=10_000)]
    min_delta: Annotated[float, Field(ge=0, le=1)] = 0.0


class Warmup(Section):
    """A linear warmup from `start_factor` x lr to lr over `iterations`, then the poly decay
    over the iterations that remain (torch's SequentialLR of LinearLR and PolynomialLR)."""

    iterations: Annotated[int, Field(gt=0, le=MAX_ITERATIONS)]
    start_factor: Annotated[float, Field(gt=0, le=1)] = 0.001


class Ema(Section):
    """An exponential moving average of the weights and BN buffers, updated every `every`
    optimizer steps: ema = decay * ema + (1 - decay) * weights (the first update copies)."""

    decay: Annotated[float, Field(gt=0, lt=1)]
    every: Annotated[int, Field(gt=0, le=MAX_ITERATIONS)] = 1


class ColorJitter(Section):
    """Brightness, contrast and saturation factors drawn from [1 - x, 1 + x] and a hue shift
    from [-hue, hue], applied in a random order (torchvision's ColorJitter), image only."""

    brightness: Annotated[float, Field(ge=0, le=1)] = 0.0
    contrast: Annotated[float, Field(ge=0, le=1)] = 0.0
    saturation: Annotated[float, Field(ge=0, le=1)] = 0.0
    hue: Annotated[float, Field(ge=0, le=0.5)] = 0.0
    p: Annotated[float, Field(ge=0, le=1)] = 1.0


class GaussianBlur(Section):
    """A Gaussian blur with a sigma drawn from `sigma`, with probability `p`, image only."""

    kernel: Annotated[int, Field(ge=3, le=99)] = 5
    sigma: Annotated[list[Annotated[float, Field(gt=0, le=50)]], Field(min_length=2, max_length=2),
                     AfterValidator(_ordered)] = [0.1, 2.0]
    p: Annotated[float, Field(ge=0, le=1)] = 0.5

    @model_validator(mode="after")
    def _odd(self) -> Self:
        if self.kernel % 2 == 0:
            raise PydanticCustomError("kernel", "gaussian_blur.kernel must be odd")
        return self


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
    loss: Annotated[str, Field(min_length=2, max_length=200), AfterValidator(_loss)] = "ce"
    class_weights: Optional[Literal["inverse_frequency", "median_frequency"] |
                            Annotated[list[Annotated[float, Field(ge=0, le=1e6)]],
                                      Field(min_length=2, max_length=255)]] = None
    top_k_percent_pixels: Annotated[float, Field(gt=0, le=1)] = 1.0   # ohem: the TF original's names
    hard_example_mining_step: Annotated[int, Field(ge=0, le=MAX_ITERATIONS)] = 0
    keep: Literal["last", "best", "ema"] = "last"
    early_stop: Optional[EarlyStop] = None
    warmup: Optional[Warmup] = None
    ema: Optional[Ema] = None
    accumulate: Annotated[int, Field(ge=1, le=1024)] = 1   # micro-batches of batch_size per step
    clip_grad_norm: Optional[Annotated[float, Field(gt=0, le=1e6)]] = None
    color_jitter: Optional[ColorJitter] = None
    gaussian_blur: Optional[GaussianBlur] = None

    @model_validator(mode="after")
    def _validated_selection(self) -> Self:
        if (self.keep == "best" or self.early_stop) and not self.val_every:
            raise PydanticCustomError("selection", "keep: best and early_stop choose by the "
                                      "validation mIoU every val_every iterations; set val_every > 0")
        if self.keep == "ema" and self.ema is None:
            raise PydanticCustomError("selection", "keep: ema keeps the averaged weights; set ema: "
                                      "{decay: 0.999} too")
        if self.ema is not None and self.keep == "last":
            raise PydanticCustomError("selection", "ema is set but keep: last keeps the raw "
                                      "weights; set keep: ema (the average) or best (the best "
                                      "validation of the average)")
        if self.ema is not None and self.ema.every > self.iterations:
            raise PydanticCustomError("ema", "ema.every must be at most iterations (the average "
                                      "needs an update)")
        if self.warmup is not None and self.warmup.iterations >= self.iterations:
            raise PydanticCustomError("warmup", "warmup.iterations must be below iterations (the "
                                      "poly decay runs over the rest)")
        return self

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


class TileOptions(Section):
    """Sliding windows for large images (`predict --tile --overlap`, `serve`); tile None: the
    whole image up to the pixel limit."""

    tile: Optional[Annotated[int, Field(ge=33, le=MAX_SIZE)]] = None
    overlap: Annotated[float, Field(ge=0.0, lt=0.9)] = 0.25


MAX_PIXELS = 400_000_000  # 20000 x 20000; above it an image is refused whatever the settings


class WindowSettings(TileOptions):
    """Sliding windows in params (`evaluate`, `register.serve`): `tile` for every image, or
    with tile None the whole image up to `whole_pixels` and windows of the default size above."""

    whole_pixels: Annotated[int, Field(gt=0, le=MAX_PIXELS)] = 4_000_000


class EvaluateConfig(WindowSettings):
    """The evaluate stage: Table 5's strategies, boundary bands, samples; every model and
    deployed format runs in sliding windows when `tile` is set (or above `whole_pixels`)."""

    output_strides: Annotated[list[OutputStride], Field(min_length=1), AfterValidator(_unique)]
    scales: Scales
    flip: Annotated[list[bool], Field(min_length=1), AfterValidator(_unique)]
    trimap_widths: Annotated[list[Annotated[int, Field(gt=0, le=256)]], Field(min_length=1),
                             AfterValidator(_unique)]
    sample_images: Annotated[int, Field(ge=0, le=64)]
    madds_size: Annotated[int, Field(ge=32, le=MAX_SIZE)]
    pad_to: Optional[PadTo]
    calibration_pixels: Annotated[int, Field(ge=1000, le=100_000_000)] = 1_000_000
    calibration_bins: Annotated[int, Field(ge=2, le=100)] = 15


class DeployConfig(Section):
    """The deploy stage's files and the formats evaluate measures (`runtime/precision`)."""

    formats: Annotated[list[Literal[FORMATS]], Field(max_length=len(FORMATS)),  # type: ignore[valid-type]
                       AfterValidator(_unique)]
    calibration_images: Annotated[int, Field(gt=0, le=10_000)]
    calibration_size: Annotated[int, Field(ge=33, le=MAX_SIZE)]
    max_drop: Annotated[float, Field(ge=0, le=1)] = 0.01
    threads: Annotated[int, Field(ge=0, le=256)] = 1


class ServeConfig(WindowSettings):
    """How the registered model runs when served: its runtime and precision (`auto`: the
    fastest deployed format evaluate measured within `deploy.max_drop`), the largest image it
    takes, the sliding windows above `whole_pixels`, and what one request may cost."""

    runtime: Literal[("auto", *RUNTIMES)] = "torch"  # type: ignore[valid-type]
    precision: Literal[("auto", *PRECISIONS)] = "fp32"  # type: ignore[valid-type]
    max_pixels: Annotated[int, Field(gt=0, le=MAX_PIXELS)] = 40_000_000
    max_output_pixels: Annotated[int, Field(gt=0, le=MAX_PIXELS)] = 16_000_000
    max_request_pixels: Annotated[int, Field(gt=0, le=10 * MAX_PIXELS)] = 100_000_000
    concurrency: Annotated[int, Field(gt=0, le=64)] = 1
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 55.0
    threads: Annotated[int, Field(ge=0, le=256)] = 0

    @model_validator(mode="after")
    def _a_format_that_exists(self) -> Self:
        if "auto" in (self.runtime, self.precision):
            if self.runtime != self.precision:
                raise PydanticCustomError("format", "runtime and precision are both auto (the "
                                          "fastest measured format) or neither")
            return self
        try:
            check_format(self.runtime, self.precision)
        except ValueError as exc:
            raise PydanticCustomError("format", "{reason}", {"reason": str(exc)}) from None
        return self


class RegisterConfig(Section):
    model_name: Annotated[str, AfterValidator(_model_name)]
    min_miou: Annotated[float, Field(ge=0, le=1)]
    promote: Literal["if_better", "never", "always"] = "if_better"
    license: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9.+-]+$")] = "other"
    inference: InferenceConfig
    serve: ServeConfig = ServeConfig()


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


class RankConfig(Section):
    """The rank stage: how an unlabeled image is scored (docs/data.md "Which images to label
    next")."""

    score: Literal["entropy", "low_confidence"] = "entropy"
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    top_k: Annotated[int, Field(ge=1, le=200)] = 8
    max_pixels: Annotated[int, Field(gt=0, le=MAX_PIXELS)] = 40_000_000  # larger: left out


class SearchRange(Section):
    """A sweep's range for one params key: floats `{low, high}` (`log: true` for a log scale),
    integers `{low, high, step}`."""

    low: float | int
    high: float | int
    log: bool = False
    step: Optional[Annotated[int, Field(gt=0)]] = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.low < self.high:
            raise PydanticCustomError("range", "expected low < high")
        if self.step is not None and not (isinstance(self.low, int) and isinstance(self.high, int)):
            raise PydanticCustomError("range", "step is for integer ranges (low and high integers)")
        if self.log and self.low <= 0:
            raise PydanticCustomError("range", "a log range needs low > 0")
        return self


Choice = bool | int | float | Annotated[str, Field(min_length=1, max_length=200)]


def _space_value(value: Any) -> Any:
    """A space entry: a mapping is a range, a list the choices; anything else is refused."""
    if isinstance(value, dict):
        try:
            return validate(SearchRange, value)
        except ConfigError as exc:
            reasons = [line.removeprefix("params: ").split(", got ")[0].split("; allowed")[0]
                       for line in str(exc).splitlines()]
            raise PydanticCustomError("range", "{reason}", {"reason": "; ".join(reasons)}) from None
    if isinstance(value, list) and value and all(
            isinstance(v, (bool, int, float, str)) for v in value):
        return value
    raise PydanticCustomError("space", "expected {low, high[, log | step]} or a non-empty list "
                              "of values")


class SweepConfig(Section):
    """A sweep: an Optuna study of DVC experiments, one per trial (`python -m deeplab.sweep`);
    no stage reads this section. `storage` null: an SQLite file beside the repository (one
    machine); `postgresql://...` for many (docs/sweeps.md)."""

    study: Annotated[str, AfterValidator(_model_name)]
    storage: Optional[Name] = None
    metric: Annotated[str, Field(min_length=1, max_length=100)] = "miou"
    direction: Literal["maximize", "minimize"] = "maximize"
    trials: Annotated[int, Field(gt=0, le=100_000)]
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["none", "median", "hyperband"] = "median"
    seed: Seed = 0
    retries: Annotated[int, Field(ge=0, le=100)] = 1
    heartbeat_s: Annotated[int, Field(gt=0, le=3600)] = 20
    grace_s: Annotated[int, Field(gt=0, le=86_400)] = 60
    storage_wait_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    space: Annotated[dict[Annotated[str, Field(min_length=3, max_length=200)],
                          Annotated[Any, BeforeValidator(_space_value)]], Field(min_length=1)]

    @model_validator(mode="after")
    def _grid_is_finite(self) -> Self:
        if self.sampler == "grid":
            ranges = [k for k, v in self.space.items() if isinstance(v, SearchRange) and v.step is None]
            if ranges:
                raise PydanticCustomError("grid", "sampler grid needs lists or integer ranges with "
                                          "a step; {key} is a continuous range", {"key": ranges[0]})
        return self


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
    deploy: Optional[DeployConfig] = None
    rank: Optional[RankConfig] = None
    sweep: Optional[SweepConfig] = None
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


SECTIONS = tuple(field.alias or name for name, field in Params.model_fields.items() if name != "seed")
OPTIONAL = ("sweep",)  # a params file may leave these out
