"""params.yaml validation: every bad key or value is named by its path; choices defined once."""

import copy
from pathlib import Path
from typing import get_args

import pytest
import yaml

from deeplab.config import ConfigError, ModelConfig, Params, load_params, parse_params
from deeplab.model.choices import BACKBONE_ALIASES, BACKBONES, OUTPUT_STRIDES

RAW = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())


def write(tmp_path, mutate):
    params = copy.deepcopy(RAW)
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_default_params_are_valid(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert isinstance(params, Params) and params.model.output_stride == 16
    assert params.finetune.repeat_hard == 2 and params.pretrain.repeat_hard == 1


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p["finetune"].__setitem__("lr", "abc"), 'finetune.lr: expected a valid number, got "abc"'),
    (lambda p: p["pretrain"].__setitem__("lrr", 1), "pretrain.lrr: unknown key (did you mean 'lr'?)"),
    (lambda p: p.__setitem__("evalute", {}), "evalute: unknown key (did you mean 'evaluate'?)"),
    (lambda p: p["model"].__setitem__("output_stride", 12), "model.output_stride: expected 8, 16 or 32, got 12"),
    (lambda p: p["model"].__setitem__("output_stride", "16"), 'model.output_stride: expected 8, 16 or 32, got "16"'),
    (lambda p: p["pretrain"].__setitem__("batch_size", 0), "pretrain.batch_size: expected a value greater than 0"),
    (lambda p: p["pretrain"].__setitem__("batch_size", True), "pretrain.batch_size: expected a valid integer, got True"),
    (lambda p: p["pretrain"].__setitem__("scale_range", [2.0, 0.5]), "pretrain.scale_range: expected [low, high]"),
    (lambda p: p["pretrain"].__setitem__("scale_range", [0.5]), "pretrain.scale_range: expected at least 2 items"),
    (lambda p: p["model"].__setitem__("dropout", float("nan")), "model.dropout: expected a finite number"),
    (lambda p: p["preprocess"].__setitem__("hard_classes", ["sofa", "sofa"]),
     "preprocess.hard_classes: expected a list without duplicates"),
    (lambda p: p["data"].__setitem__("classes", ["background", "crack", "crack"]),
     "data.classes: expected a list without duplicates"),
    (lambda p: p["data"].__setitem__("classes", ["background"]), "data.classes: expected at least 2 items"),
    (lambda p: p["data"].__setitem__("layout", "coco"), "data.layout: expected 'voc', 'folder' or 'cityscapes'"),
    (lambda p: p["data"].__setitem__("palette", [[0, 0, 256], [1, 2, 3]]),
     "data.palette[0][2]: expected a value less than or equal to 255"),
    (lambda p: p["data"].update(root="/a", voc_root="/b"), "data: voc_root and root are the same setting"),
    (lambda p: p["data"]["synthetic"].__setitem__("coco_train_images", 0),
     "data.synthetic: coco_train_images and coco_val_images are both 0"),
    (lambda p: p["model"].pop("decoder"), "model.decoder: missing key"),
    (lambda p: p.pop("model"), "model: missing key"),
    (lambda p: p.__setitem__("model", [1]), "model: expected a mapping of keys"),
    (lambda p: p["data"].__setitem__("root", ""), 'data.root: expected a non-empty string, got ""'),
    (lambda p: p["ablations"]["no_sc"].__setitem__("seperable", False),
     "ablations.no_sc.seperable: unknown key (did you mean 'separable'?)"),
    (lambda p: p["ablations"].__setitem__("No-Dec", {"decoder": False}),
     "ablations.No-Dec: a variant name must be lower-case"),
    (lambda p: p["ablations"].__setitem__("x", {"init": "coco"}),
     "ablations.x.init: expected pretrain, imagenet, scratch, a model file (.pt) or a models:/ URI"),
    (lambda p: p["ablations"].__setitem__("x", {}), "ablations.x: expected a mapping of settings to change"),
    (lambda p: p["ablations"].__setitem__("x", {"decoder": None}), "ablations.x: decoder: expected a value"),
    (lambda p: p["register"]["inference"].__setitem__("output_stride", 4),
     "register.inference.output_stride: expected 8, 16 or 32"),
    (lambda p: p["register"].__setitem__("model_name", "it's"), "register.model_name: expected a name of letters"),
])
def test_bad_values_name_the_key(tmp_path, mutate, message):
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, mutate))
    assert message in str(err.value)


def test_every_fault_is_reported_at_once(tmp_path):
    def two_faults(p):
        p["model"]["decoder"] = "yes"
        p["finetune"]["lr"] = -1
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, two_faults))
    assert str(err.value).splitlines() == ['model.decoder: expected a valid boolean, got "yes"',
                                           "finetune.lr: expected a value greater than 0, got -1"]


def test_sections_limit_what_a_stage_validates(tmp_path):
    path = write(tmp_path, lambda p: p["finetune"].__setitem__("lr", -1))
    params = load_params(path, sections=("evaluate",))
    assert params.evaluate.flip == [False, True] and params.finetune is None
    assert set(params.as_dict()) == {"seed", "evaluate"}
    with pytest.raises(ConfigError, match="finetune.lr"):
        load_params(path, sections=("finetune",))
    with pytest.raises(ConfigError, match="evalute: unknown key"):  # misspelled: every stage fails
        load_params(write(tmp_path, lambda p: p.__setitem__("evalute", p.pop("evaluate"))),
                    sections=("model",))


def test_params_are_immutable_and_replace_validates(repo_root):
    params = load_params(repo_root / "params.yaml")
    with pytest.raises(ValueError):
        params.model.decoder = False
    assert params.model.replace(backbone="mobilenetv2").backbone == "mobilenet_v2"
    with pytest.raises(ConfigError, match="output_stride: expected 8, 16 or 32"):
        params.model.replace(output_stride=4)


def test_variant_params_override_model_and_init(repo_root):
    params = load_params(repo_root / "params.yaml")
    params = params.replace(ablations={"dense": {"separable": False, "init": "scratch"}})
    v = params.variant("dense")
    assert v.model.separable is False and v.finetune.init == "scratch"
    assert params.model.separable is True and params.finetune.init == "pretrain"
    assert v.model.decoder == params.model.decoder
    assert v.as_dict()["model"] == {**params.as_dict()["model"], "separable": False}
    with pytest.raises(ConfigError, match="ablations.nope: no such variant"):
        params.variant("nope")


def test_the_schema_takes_its_choices_from_the_model():
    """Backbones and output strides are defined once (`deeplab.model.choices`)."""
    fields = ModelConfig.model_fields
    assert set(get_args(fields["output_stride"].annotation)) == set(OUTPUT_STRIDES)
    assert set(get_args(fields["backbone"].annotation)) == set(BACKBONES) | set(BACKBONE_ALIASES)
    for name in BACKBONES:
        raw = copy.deepcopy(RAW)
        raw["model"]["backbone"] = name
        assert parse_params(raw, sections=("model",)).model.backbone == name


def test_model_settings_build_the_network(repo_root):
    from deeplab.engine.stage import build_model

    params = load_params(repo_root / "params.yaml")
    model = build_model(params.model, 21)
    assert {k: model.config[k] for k in params.model.network_kwargs()} == params.model.network_kwargs()
