"""The network: shapes, dilations, ASPP rates, decoder, multiply-adds, weight loading."""


import pytest
import torch
import torchvision
from helpers.repo import REPO
from torch import nn

from deeplab.core.config import load_params
from deeplab.model import DeepLabV3Plus, aspp_rates
from deeplab.report.madds import count_madds


def small(backbone="resnet50", os_=16, **kw):
    kw.setdefault("aspp_channels", 32)
    kw.setdefault("decoder_channels", 32)
    return DeepLabV3Plus(num_classes=5, backbone=backbone, output_stride=os_, **kw)



@pytest.mark.parametrize("backbone", ["resnet50", "resnet101", "mobilenetv2", "xception65"])
@pytest.mark.parametrize("os_", [8, 16, 32])
def test_output_shape_and_feature_stride(backbone, os_):
    model = small(backbone, os_).eval()
    with torch.no_grad():
        for h, w in [(65, 65), (33, 47)]:
            x = torch.rand(1, 3, h, w)
            assert model(x).shape == (1, 5, h, w)
        low, high = model.backbone(torch.rand(1, 3, 64, 64))
    assert low.shape[-1] == 64 // 4
    assert high.shape[-1] == 64 // os_
    assert low.shape[1] == model.backbone.low_channels and high.shape[1] == model.backbone.high_channels


def test_odd_paper_sizes():
    model = small("mobilenetv2").eval()
    with torch.no_grad():
        for s in (513, 321):
            assert model(torch.rand(1, 3, s, s)).shape == (1, 5, s, s)


def test_aspp_rates_follow_output_stride():
    assert aspp_rates(16) == (6, 12, 18)
    assert aspp_rates(8) == (12, 24, 36)


def test_resnet_dilations_and_multigrid():
    model = small("resnet50", 16)
    layer4 = model.backbone.dilations()[-1]
    assert layer4 == [2, 4, 8]  # multi-grid (1, 2, 4) x rate 2
    assert set(model.backbone.dilations()[1]) == {1}
    model.set_output_stride(8)
    layer3 = model.backbone.dilations()[1]
    assert layer3[0] == 1 and set(layer3[1:]) == {2}  # the unit that carried the stride keeps rate 1
    assert model.backbone.dilations()[-1] == [4, 8, 16]
    assert model.aspp.rates == (12, 24, 36)
    strided = [m.stride for m in model.backbone.stages[2].modules() if isinstance(m, nn.Conv2d)]
    assert (2, 2) not in strided


def test_set_output_stride_keeps_parameters_and_matches_fresh_build():
    torch.manual_seed(0)
    model = small("resnet50", 16).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = [id(p) for p in model.parameters()]
    model.set_output_stride(8)
    after = model.state_dict()
    assert [id(p) for p in model.parameters()] == ids
    assert all(torch.equal(before[k], after[k]) for k in before)
    fresh = small("resnet50", 8).eval()
    fresh.load_state_dict(after)
    x = torch.rand(1, 3, 49, 49)
    with torch.no_grad():
        assert torch.allclose(model(x), fresh(x), atol=1e-5)
        _, high = model.backbone(torch.rand(1, 3, 64, 64))
    assert high.shape[-1] == 8
    model.set_output_stride(16)
    assert model.aspp.rates == (6, 12, 18) and model.backbone.dilations()[-1] == [2, 4, 8]


def test_train_step_at_batch_size_one():
    model = small("mobilenetv2").train()
    out = model(torch.rand(1, 3, 65, 65))
    loss = nn.functional.cross_entropy(out, torch.randint(0, 5, (1, 65, 65)))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("separable", [False, True])
def test_separable_structure(separable):
    model = small("mobilenetv2", separable=separable)
    branch = model.aspp.branches[1]
    if separable:
        assert branch[0].groups == branch[0].in_channels and branch[0].kernel_size == (3, 3)
        assert isinstance(branch[1], nn.BatchNorm2d) and isinstance(branch[2], nn.ReLU)
        assert branch[3].kernel_size == (1, 1) and isinstance(branch[4], nn.BatchNorm2d)
    else:
        assert branch[0].groups == 1 and branch[0].kernel_size == (3, 3)


def test_decoder_layout():
    model = small("resnet50", decoder=True, low_level_channels=48)
    assert model.head.reduce[0].out_channels == 48
    assert len(model.head.fuse) == 2
    assert model.head.fuse[0].spatial_conv.kernel_size == (3, 3)
    plain = small("resnet50", decoder=False)
    assert not hasattr(plain.head, "reduce")


def test_count_madds_against_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8),
                        nn.Conv2d(8, 4, 1, stride=2), nn.Flatten(), nn.Linear(4 * 5 * 5, 7))
    hand = 10 * 10 * 8 * 3 * 9 + 10 * 10 * 8 * 1 * 9 + 5 * 5 * 4 * 8 + 100 * 7
    assert count_madds(net, (10, 10)) == hand


def test_separable_saves_madds():
    dense = count_madds(small("mobilenetv2", separable=False, aspp_channels=256, decoder_channels=256), (129, 129))
    sep = count_madds(small("mobilenetv2", separable=True, aspp_channels=256, decoder_channels=256), (129, 129))
    assert sep < 0.7 * dense


def test_checkpoint_with_other_class_count():
    src = small("mobilenetv2")
    dst = DeepLabV3Plus(num_classes=7, backbone="mobilenetv2", aspp_channels=32, decoder_channels=32)
    with pytest.raises(ValueError, match="trained for 5 classes, the model has 7"):
        dst.load_weights(src.state_dict(), source="x.pt")
    skipped = dst.load_weights(src.state_dict(), reinit_classifier=True)
    assert skipped == ["head.classifier.bias", "head.classifier.weight"] or sorted(skipped) == [
        "head.classifier.bias", "head.classifier.weight"]
    assert torch.equal(dst.aspp.branches[0][0].weight, src.aspp.branches[0][0].weight)


def test_pretrained_backbone_from_local_file(tmp_path):
    torch.manual_seed(1)
    net = torchvision.models.mobilenet_v2()
    path = tmp_path / "mnv2.pth"
    torch.save(net.state_dict(), path)
    model = small("mobilenetv2", pretrained_backbone=str(path))
    assert torch.equal(model.backbone.stem[0][0].weight, net.features[0][0].weight)
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="does not match"):
        small("mobilenetv2", pretrained_backbone=str(bad))
    with pytest.raises(FileNotFoundError):
        small("mobilenetv2", pretrained_backbone=str(tmp_path / "missing.pth"))


def test_load_matching_weights_takes_only_same_name_and_shape():
    torch.manual_seed(0)
    src = DeepLabV3Plus(21, "mobilenetv2", 16, separable=True, aspp_channels=16, decoder_channels=16)
    dst = DeepLabV3Plus(21, "mobilenetv2", 16, separable=False, aspp_channels=16, decoder_channels=16)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    fresh = dst.load_matching_weights(src.state_dict())
    assert fresh and all(k.startswith(("aspp.", "head.")) for k in fresh)
    assert "aspp.branches.1.0.weight" in fresh  # dense 3x3 vs depthwise: other shape
    for key, value in dst.state_dict().items():
        expected = before[key] if key in fresh else src.state_dict()[key]
        assert torch.equal(value, expected), key


@pytest.mark.parametrize("backbone", ["resnet50", "xception65"])
def test_channels_last_bf16_autocast_forward_backward(backbone):
    """The CUDA fast path's layout and dtype handling, exercised on CPU (bf16 autocast)."""
    torch.manual_seed(0)
    model = DeepLabV3Plus(21, backbone, 16, aspp_channels=32, decoder_channels=32)
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.rand(2, 3, 65, 65).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), torch.randint(0, 21, (2, 65, 65)))
    loss.backward()
    assert out.shape == (2, 21, 65, 65) and out.dtype == torch.bfloat16
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_count_madds_equals_a_per_layer_count_on_a_whole_network():
    """torch's FlopCounterMode (what count_madds uses) against an independent count: one
    multiply-add per weight per output element of every conv and linear layer."""
    net = small("mobilenetv2", aspp_channels=64, decoder_channels=64).eval()
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net(torch.zeros(1, 3, 129, 129))
    for h in handles:
        h.remove()
    assert count_madds(net, (129, 129)) == total


def test_mobilenet_v2_spelling_and_alias(tmp_path):
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for spelling in ("mobilenet_v2", "mobilenetv2"):
        params["model"]["backbone"] = spelling
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
        assert load_params(tmp_path / "p.yaml").model.backbone == "mobilenet_v2"
    old = DeepLabV3Plus(21, "mobilenetv2", 16, aspp_channels=16, decoder_channels=16)
    assert old.config["backbone"] == "mobilenet_v2"
