"""One tester for every entry of the backbone table (as smp's `tests/models/base.py` runs one
tester over every encoder): the table equals the choices, shapes at every output stride, the
atrous dilations, and one clear error for a name that is not in it."""

import pytest
import torch
from torch import nn

from deeplab.core.choices.backbones import BACKBONES, OUTPUT_STRIDES
from deeplab.model.backbones import BACKBONE_SPECS, backbone_spec, build_backbone


def test_the_table_holds_exactly_the_configurable_backbones():
    assert tuple(BACKBONE_SPECS) == BACKBONES


def test_an_unknown_name_is_one_clear_error_not_a_fall_through():
    with pytest.raises(ValueError, match="unknown backbone 'resnet18'; choose one of resnet50"):
        build_backbone("resnet18")
    with pytest.raises(ValueError, match="unknown backbone"):
        backbone_spec("Xception65")


def expected_rates(output_stride: int, stages: int, stem_stride: int = 4) -> list[tuple[int, int]]:
    """(rate of the stage's first unit, rate of the others) under the atrous convention: a
    stage that loses its stride keeps the previous rate in its first unit."""
    stride, rate, out = stem_stride, 1, []
    for _ in range(stages):
        previous = rate
        if stride < output_stride:
            stride *= 2
        else:
            rate *= 2
        out.append((previous, rate))
    return out


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("output_stride", OUTPUT_STRIDES)
def test_every_backbone_has_its_shapes_and_dilations(name, output_stride):
    backbone = build_backbone(name, output_stride, multi_grid=None).eval()
    assert backbone.output_stride == output_stride
    with torch.no_grad():
        low, high = backbone(torch.rand(1, 3, 64, 96))
    assert low.shape[1:] == (backbone.low_channels, 16, 24)
    assert high.shape[1:] == (backbone.high_channels, 64 // output_stride, 96 // output_stride)

    strides = [[m.stride[0] for m in s.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1]
               for s in backbone.stages]
    native = [bool(convs) for convs in backbone._strided]
    for i, (first, rest) in enumerate(expected_rates(output_stride, len(backbone.stages))):
        keeps_stride = backbone.stem_stride * 2 ** (i + 1) <= output_stride
        assert bool(strides[i]) == (keeps_stride and native[i]), (i, strides[i])
        units = backbone.units(i)
        rates = [{m.dilation[0] for m in u.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1}
                 for u in units]
        assert rates[0] == {first}, (i, rates[0])
        assert all(r == {rest} for r in rates[1:]), (i, rates[1:])
