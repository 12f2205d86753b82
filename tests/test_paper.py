"""Faithful to the papers, proven against implementations nobody here wrote (torchvision, timm):
atrous rates, input normalisation, BN and weight decay, evaluation geometry, paper recipes."""

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.transforms.v2 import functional as TF

from deeplab.config import ConfigError, load_params
from deeplab.engine.distributed import synchronize_batchnorm
from deeplab.model.flops import count_madds
from deeplab.evaluation.inference import InferenceStrategy, padded_size, predict_probs
from deeplab.model import DeepLabV3Plus
from deeplab.model.backbones import ResNetBackbone, XceptionBackbone, build_backbone
from deeplab.recipe import apply_recipe, load_recipe, overrides
from deeplab.engine.loop import set_train_mode
from deeplab.engine.optim import param_groups
from test_train import RUNTIME, SCHED, SETTINGS

REPO = Path(__file__).resolve().parents[1]


def randomize_bn(net: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters (as trained weights have)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# --- 1. Atrous convention ---------------------------------------------------------------

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


def unit_rates(backbone, stage: int) -> list[int]:
    """The dilation of each unit's 3x3 convs in a stage (one value per unit)."""
    out = []
    for unit in backbone.units(stage):
        rates = {m.dilation[0] for m in unit.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1}
        assert len(rates) == 1
        out.append(rates.pop())
    return out


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


# --- 2. Input normalisation ---------------------------------------------------------------

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


# --- 3. Batch norm and weight decay --------------------------------------------------------

def test_bn_momentum_reaches_every_bn_including_synchronized():
    model = DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=16, decoder_channels=16,
                          bn_momentum=0.0003)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) > 50 and all(m.momentum == 0.0003 for m in bns)
    converted = synchronize_batchnorm(model, torch.device("cpu"))  # GlobalBatchNorm (gloo)
    assert all(m.momentum == 0.0003 for m in converted.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm))
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # what CUDA gets
    assert all(m.momentum == 0.0003 for m in sync.modules() if isinstance(m, nn.SyncBatchNorm))


def test_weight_decay_on_conv_and_linear_weights_only():
    model = DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=16, decoder_channels=16)
    decay, no_decay = param_groups(model, 4e-5)
    weights = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {id(p) for p in decay["params"]} == weights and decay["weight_decay"] == 4e-5
    others = {id(p) for p in model.parameters()} - weights  # BN affine and biases
    assert {id(p) for p in no_decay["params"]} == others and no_decay["weight_decay"] == 0.0


def test_freeze_bn_keeps_statistics_and_affine(tiny_train_csv, tmp_path):
    from deeplab.data.dataset import SegmentationDataset, read_list
    from deeplab.engine.loop import train

    torch.manual_seed(0)
    model = DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=16, decoder_channels=16)
    bn_state = {k: v.clone() for k, v in model.state_dict().items()
                if any(k.startswith(n + ".") for n, m in model.named_modules()
                       if isinstance(m, nn.BatchNorm2d))}
    conv_before = model.aspp.branches[0][0].weight.clone()
    sched = SCHED.replace(iterations=3, lr=0.05, freeze_bn=True)
    train(model, SegmentationDataset(read_list(tiny_train_csv), 33), sched, SETTINGS, RUNTIME,
          tmp_path / "c.ckpt", 0, {})
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in bn_state.items() if "num_batches" not in k)
    assert not torch.equal(model.aspp.branches[0][0].weight, conv_before)
    set_train_mode(model, freeze_bn=True)
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


# --- 4. Evaluation geometry ----------------------------------------------------------------

class Probe(nn.Module):
    """A stand-in network that records its input size and echoes two channels as logits."""

    output_stride = 16

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1))
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return x[:, :2] * 5


def test_views_are_padded_with_the_mean_to_exact_sizes_and_cropped_back():
    probe = Probe()
    x = torch.rand(1, 3, 40, 70)
    probs = predict_probs(probe, x)
    assert probe.sizes == [(49, 81)]  # smallest 16k+1 holding 40 x 70
    assert torch.allclose(probs, (x[:, :2] * 5).softmax(1), atol=1e-6)  # cropped back exactly
    predict_probs(probe, x, InferenceStrategy(pad_to=513))
    assert probe.sizes[-1] == (513, 513)
    assert padded_size(600, 16, 513) == 609  # larger than pad_to: the next exact size

    seen = []
    probe.forward = lambda v: (seen.append(v), v[:, :2])[1]
    predict_probs(probe, x)
    padded = seen[0]
    assert torch.equal(padded[..., :40, :70], x)
    assert torch.allclose(padded[..., 40:, :], probe.mean.expand(1, 3, 9, 81))


def test_multi_scale_resizes_as_training_does():
    probe = Probe()
    x = torch.rand(1, 3, 40, 60)
    probs = predict_probs(probe, x, InferenceStrategy(scales=(0.5,)))
    small = TF.resize(x, [20, 30], antialias=True)  # the training transform's resize
    logits = F.interpolate(small[:, :2] * 5, size=(40, 60), mode="bilinear", align_corners=False)
    assert torch.allclose(probs, logits.softmax(1), atol=1e-6)


# --- 5. Recipes ----------------------------------------------------------------------------

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_all_recipes_exist():
    assert {p.stem for p in RECIPES} == {"resnet101_voc_coco", "resnet101_voc_no_coco",
                                         "xception65_voc_coco", "xception65_voc_no_coco",
                                         "xception65_cityscapes"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_valid_and_every_value_cites_its_source(path):
    recipe = load_recipe(path)
    params = apply_recipe(load_params(REPO / "params.yaml"), recipe, str(path))
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or ":" not in line:
            continue
        value = line.split("#", 1)[0].split(":", 1)[1].strip()
        if value:  # a setting, not a section header
            assert "#" in line and "[" in line.split("#", 1)[1], f"{path.name}: no source for {line!r}"
    model, finetune = params.model, params.finetune
    assert model.aspp_channels == model.decoder_channels == 256
    assert model.bn_momentum == 0.0003
    if "xception65" in path.stem:
        assert model.separable and model.multi_grid is None
    else:
        assert not model.separable and model.multi_grid == [1, 2, 4]
    if "cityscapes" in path.stem:  # 769 crops, full 1024x2048 images padded to 1025x2049
        assert params.data.layout == "cityscapes" and finetune.crop_size == 769
        assert finetune.init == "imagenet" and params.evaluate.pad_to is None
        from deeplab.evaluation.inference import padded_size
        assert (padded_size(1024, 16), padded_size(2048, 16)) == (1025, 2049)
    else:
        assert finetune.crop_size == 513
        assert finetune.init == ("imagenet" if path.stem.endswith("no_coco") else "pretrain")
    assert all(" " not in arg for arg in overrides(recipe))


def test_a_bad_recipe_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: resnet152\n")
    with pytest.raises(ConfigError, match="bad.yaml: model.backbone: expected 'resnet50', 'resnet101'"):
        apply_recipe(load_params(REPO / "params.yaml"), load_recipe(bad), str(bad))


# --- 6. Names ------------------------------------------------------------------------------

def test_mobilenet_v2_spelling_and_alias(tmp_path):
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for spelling in ("mobilenet_v2", "mobilenetv2"):
        params["model"]["backbone"] = spelling
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
        assert load_params(tmp_path / "p.yaml").model.backbone == "mobilenet_v2"
    old = DeepLabV3Plus(21, "mobilenetv2", 16, aspp_channels=16, decoder_channels=16)
    assert old.config["backbone"] == "mobilenet_v2"
