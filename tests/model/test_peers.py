"""Atrous conventions and costs against torchvision, timm and the paper's Table 5."""

import pytest
import timm
import torch
import torchvision
from torch import nn

from deeplab.model import DeepLabV3Plus
from deeplab.model.backbones import ResNetBackbone, XceptionBackbone, build_backbone
from deeplab.report.madds import count_madds


def unit_rates(backbone, stage: int) -> list[int]:
    """The dilation of each unit's 3x3 convs in a stage (one value per unit)."""
    out = []
    for unit in backbone.units(stage):
        rates = {m.dilation[0] for m in unit.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1}
        assert len(rates) == 1
        out.append(rates.pop())
    return out


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def randomize_bn(net: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters (as trained weights have)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)



@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
@pytest.mark.parametrize("os_", [16, 8])
def test_resnet_equals_torchvision_replace_stride_with_dilation(name, os_):
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)()
    randomize_bn(net)
    peer = getattr(torchvision.models, name)(replace_stride_with_dilation=[False, os_ == 8, True])
    peer.load_state_dict(net.state_dict())
    ours = ResNetBackbone(net, multi_grid=None)
    ours.set_output_stride(os_)
    ours.eval(), peer.eval()
    x = torch.rand(1, 3, 61, 45)  # odd sizes
    with torch.no_grad():
        _, high = ours(x)
        p = peer.maxpool(peer.relu(peer.bn1(peer.conv1(x))))
        p = peer.layer4(peer.layer3(peer.layer2(peer.layer1(p))))
    assert high.shape == p.shape and max_rel_diff(high, p) <= 1e-5


@pytest.mark.parametrize("os_", [16, 8])
def test_xception65_equals_timm_output_stride(os_):
    torch.manual_seed(0)
    net = timm.create_model("xception65.tf_in1k", num_classes=0)
    randomize_bn(net)
    peer = timm.create_model("xception65", output_stride=os_, num_classes=0)
    peer.load_state_dict(net.state_dict())
    ours = XceptionBackbone(net)
    ours.set_output_stride(os_)
    ours.eval(), peer.eval()
    x = torch.rand(1, 3, 53, 67)
    with torch.no_grad():
        _, high = ours(x)
        p = peer.forward_features(x)
    assert high.shape == p.shape and max_rel_diff(high, p) <= 1e-5


def test_multi_grid_rates_per_unit():
    bb = build_backbone("resnet101", 16, multi_grid=(1, 2, 4))
    assert unit_rates(bb, 1) == [1] * 23 and unit_rates(bb, 2) == [2, 4, 8]  # block4 (2, 4, 8)
    bb.set_output_stride(8)
    assert unit_rates(bb, 1) == [1] + [2] * 22 and unit_rates(bb, 2) == [4, 8, 16]
    plain = build_backbone("resnet101", 16, multi_grid=None)
    assert unit_rates(plain, 2) == [1, 2, 2]
    plain.set_output_stride(8)
    assert unit_rates(plain, 1) == [1] + [2] * 22 and unit_rates(plain, 2) == [2, 4, 4]


def test_mobilenet_v2_strided_depthwise_keeps_previous_rate():
    bb = build_backbone("mobilenet_v2", 16)
    assert unit_rates(bb, 2) == [1, 2, 2, 2]
    bb.set_output_stride(8)
    assert unit_rates(bb, 1) == [1] + [2] * 6 and unit_rates(bb, 2) == [2, 4, 4, 4]
    strided = [m for m in bb.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 3  # the stem's two (stride 4) and the first stage's (stride 8)


@pytest.mark.parametrize("os_, paper", [(16, 54.17e9), (8, 177.10e9)])
def test_xception65_decoder_sc_madds_match_table5(os_, paper):
    model = DeepLabV3Plus(21, "xception65", os_, decoder=True, separable=True)
    assert abs(count_madds(model, (513, 513)) - paper) / paper < 0.01


@pytest.mark.parametrize("backbone, mean, std", [
    ("xception65", (0.5,) * 3, (0.5,) * 3),
    ("resnet50", tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms().mean),
     tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms().std)),
    ("mobilenet_v2", tuple(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2.transforms().mean),
     tuple(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2.transforms().std)),
])
def test_backbone_receives_its_weights_normalisation(backbone, mean, std):
    if backbone == "xception65":
        cfg = timm.create_model("xception65.tf_in1k", pretrained=False).pretrained_cfg
        assert (tuple(cfg["mean"]), tuple(cfg["std"])) == (mean, std)
    model = DeepLabV3Plus(21, backbone, 16, aspp_channels=16, decoder_channels=16).eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.rand(1, 3, 33, 33)
    with torch.no_grad():
        model(x)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(seen[0], expected, atol=1e-6)
