"""The settings the network accepts, defined once: params validation, the model, the CLIs,
the benchmarks and the tests all read them from here. Plain data, no torch (timm is imported
only to check a `timm:<name>` backbone, when one is set)."""

import re

BACKBONES: tuple[str, ...] = ("resnet50", "resnet101", "xception65", "mobilenet_v2")
BACKBONE_ALIASES: dict[str, str] = {"mobilenetv2": "mobilenet_v2"}  # the spelling before torchvision's
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)
TIMM_PREFIX = "timm:"  # `timm:<name>`: any timm encoder that timm builds with features_only
_TIMM_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)?")  # architecture[.pretrained tag]


def canonical_backbone(name: str) -> str:
    """The canonical backbone name (`mobilenetv2` -> `mobilenet_v2`, `timm:<name>` kept when
    timm knows the architecture); ValueError if unknown."""
    if name.startswith(TIMM_PREFIX):
        return TIMM_PREFIX + check_timm_name(name[len(TIMM_PREFIX):])
    name = BACKBONE_ALIASES.get(name, name)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)} "
                         f"or {TIMM_PREFIX}<name> (a timm model)")
    return name


def check_timm_name(name: str) -> str:
    """`name` if timm has that architecture (`convnext_atto`, `convnext_atto.d2_in1k`)."""
    if not _TIMM_NAME.fullmatch(name):
        raise ValueError(f"backbone {TIMM_PREFIX}{name}: not a timm model name "
                         f"(lower-case architecture, optionally .pretrained_tag)")
    import timm  # only here: the choices stay plain data for every other backbone

    arch = name.split(".")[0]
    if not timm.is_model(arch):
        near = timm.list_models(f"*{arch.split('_')[0]}*")[:5]
        hint = f"; timm has e.g. {', '.join(near)}" if near else ""
        raise ValueError(f"backbone {TIMM_PREFIX}{name}: timm {timm.__version__} has no model "
                         f"{arch!r}{hint}")
    return name


def check_output_stride(output_stride: int) -> int:
    """`output_stride` if the network supports it; ValueError otherwise."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, "
                         f"got {output_stride}")
    return output_stride
