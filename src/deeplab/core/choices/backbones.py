"""The settings the network accepts, defined once: params validation, the model, the CLIs,
the benchmarks and the tests all read them from here. Plain data, no torch."""

BACKBONES: tuple[str, ...] = ("resnet50", "resnet101", "xception65", "mobilenet_v2")
BACKBONE_ALIASES: dict[str, str] = {"mobilenetv2": "mobilenet_v2"}  # the spelling before torchvision's
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)


def canonical_backbone(name: str) -> str:
    """The canonical backbone name (`mobilenetv2` -> `mobilenet_v2`); ValueError if unknown."""
    name = BACKBONE_ALIASES.get(name, name)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return name


def check_output_stride(output_stride: int) -> int:
    """`output_stride` if the network supports it; ValueError otherwise."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, "
                         f"got {output_stride}")
    return output_stride
