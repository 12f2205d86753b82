"""`model.backbone: timm:<name>`: one family of each kind that docs/model.md lists, its taps at
strides 4 and the output stride (16 and 8), an output stride changed in place equal to the
network built at it, weights from a local file equal to timm's own network, and one-line
refusals (a network with no stride-4 feature, one that timm cannot dilate, a wrong file,
ImageNet weights offline)."""

import os
import re
import subprocess
import sys

import pytest
import timm
import torch

from deeplab.model import DeepLabV3Plus
from deeplab.model.backbones import build_backbone

# The families of docs/model.md's table, each by its smallest timm model.
FAMILIES = {
    "ResNet-D": "resnet18d",
    "ResNeSt": "resnest14d",
    "EfficientNet": "efficientnet_b0",
    "EfficientNet (TF 'same' padding)": "tf_efficientnet_lite0",
    "MobileNetV3": "mobilenetv3_small_050",
    "RegNet": "regnetx_002",
    "ConvNeXt": "convnext_atto",
}


def strides(backbone, size: int = 64) -> tuple[int, int]:
    with torch.no_grad():
        low, high = backbone(torch.rand(1, 3, size, size + 32))
    assert low.shape[-1] * 4 == size + 32 and low.shape[1] == backbone.low_channels
    assert high.shape[1] == backbone.high_channels
    return size // low.shape[-2], size // high.shape[-2]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_taps_stride_4_and_the_output_stride(family):
    name = f"timm:{FAMILIES[family]}"
    torch.manual_seed(0)
    built = {os_: build_backbone(name, os_).eval() for os_ in (16, 8)}
    for os_, backbone in built.items():
        assert strides(backbone) == (4, os_)
    # From 16 to 8 and back in place: the parameters kept, the network equal to timm's own at
    # that output stride (same modules, same outputs to the last bit).
    moved = build_backbone(name, 16).eval()
    moved.load_state_dict(built[8].state_dict())
    params = [id(p) for p in moved.parameters()]
    x = torch.rand(2, 3, 64, 80)
    for os_ in (8, 16, 8):
        moved.set_output_stride(os_)
        reference = built[os_]
        reference.load_state_dict(moved.state_dict())
        assert repr(moved) == repr(reference) and moved.output_stride == os_
        with torch.no_grad():
            for ours, theirs in zip(moved(x), reference(x)):
                assert torch.equal(ours, theirs)
    assert [id(p) for p in moved.parameters()] == params


def test_a_deeplab_on_a_timm_encoder_trains_and_keeps_its_config():
    torch.manual_seed(0)
    net = DeepLabV3Plus(3, "timm:mobilenetv3_small_050", 16, aspp_channels=16, decoder_channels=16)
    assert net.config["backbone"] == "timm:mobilenetv3_small_050"
    cfg = timm.create_model("mobilenetv3_small_050").pretrained_cfg
    assert net.mean.flatten().tolist() == pytest.approx(cfg["mean"])
    x, y = torch.rand(2, 3, 65, 65), torch.randint(0, 3, (2, 65, 65))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    assert all(p.grad is not None for p in net.backbone.parameters())
    net.eval().set_output_stride(8)
    assert net(x).shape == (2, 3, 65, 65) and net.aspp.rates == (12, 24, 36)


def test_weights_from_a_local_file_equal_timms_network(tmp_path):
    arch = "resnet18d"
    torch.manual_seed(1)
    full = timm.create_model(arch).eval()  # a classifier's file: the head is left out
    path = tmp_path / "w.pth"
    torch.save({"state_dict": full.state_dict()}, path)
    backbone = build_backbone(f"timm:{arch}", 32, pretrained=str(path)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = full.forward_intermediates(x, indices=[1, 4], intermediates_only=True)
        got = backbone(x)
    for a, b in zip(got, want):
        assert torch.equal(a, b)

    other = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet34").state_dict(), other)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(other))}: does not match timm's "
                                         rf"resnet18d \(.+\)$"):
        build_backbone(f"timm:{arch}", 16, pretrained=str(other))


@pytest.mark.parametrize("name, message", [
    ("timm:vit_tiny_patch16_224", "backbone timm:vit_tiny_patch16_224: timm cannot build it as a "
                                  "feature encoder at output stride 16"),
    ("timm:vgg11", "backbone timm:vgg11: timm cannot build it as a feature encoder at output "
                   "stride 16"),
])
def test_a_network_that_cannot_reach_the_output_stride_is_one_line(name, message):
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        build_backbone(name, 16)
    assert "\n" not in str(caught.value)


def test_imagenet_weights_offline_name_what_is_missing_and_the_local_file():
    """As on a machine without the internet (the hub's offline mode: no wait for a timeout)."""
    code = ("from deeplab.model.backbones import build_backbone\n"
            "build_backbone('timm:regnetx_002', 16, pretrained='imagenet')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert out.returncode != 0
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("ValueError: backbone timm:regnetx_002: timm could not get its "
                           "ImageNet weights (LocalEntryNotFoundError: ")
    assert line.endswith("set model.pretrained_backbone to that file")
