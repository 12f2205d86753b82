"""params.yaml validation: every bad key or value is named by its path."""

import pytest
import yaml

from deeplab.config import ConfigError, load_params


def write(tmp_path, mutate):
    from pathlib import Path
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_default_params_are_valid(repo_root):
    assert load_params(repo_root / "params.yaml")["model"]["output_stride"] == 16


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p["finetune"].__setitem__("lr", "abc"), 'finetune.lr: expected a positive number, got "abc"'),
    (lambda p: p["pretrain"].__setitem__("lrr", 1), "pretrain.lrr: unknown key (did you mean 'lr'?)"),
    (lambda p: p.__setitem__("evalute", {}), "evalute: unknown key (did you mean 'evaluate'?)"),
    (lambda p: p["model"].__setitem__("output_stride", 12), "model.output_stride: expected one of 8, 16, 32"),
    (lambda p: p["pretrain"].__setitem__("batch_size", 0), "pretrain.batch_size: expected a positive integer"),
    (lambda p: p["preprocess"]["hard_classes"].append("table"), "preprocess.hard_classes[5]: expected one of"),
    (lambda p: p["model"].pop("decoder"), "model.decoder: missing key"),
    (lambda p: p["ablations"]["no_sc"].__setitem__("seperable", False),
     "ablations.no_sc.seperable: unknown key (did you mean 'separable'?)"),
    (lambda p: p["ablations"].__setitem__("No-Dec", {"decoder": False}),
     "ablations.No-Dec: a variant name must be lower-case"),
    (lambda p: p["ablations"].__setitem__("x", {"init": "coco"}), "ablations.x.init: expected one of"),
    (lambda p: p["register"]["inference"].__setitem__("output_stride", 4),
     "register.inference.output_stride: expected one of 8, 16, 32"),
])
def test_bad_values_name_the_key(tmp_path, mutate, message):
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, mutate))
    assert message in str(err.value)


def test_sections_limit_what_a_stage_validates(tmp_path):
    path = write(tmp_path, lambda p: p["finetune"].__setitem__("lr", -1))
    assert load_params(path, sections=("evaluate",))["evaluate"]["flip"] == [False, True]
    with pytest.raises(ConfigError, match="finetune.lr"):
        load_params(path, sections=("finetune",))


def test_variant_params_override_model_and_init(repo_root):
    from deeplab.engine.stage import variant_params

    params = load_params(repo_root / "params.yaml")
    params["ablations"] = {"dense": {"separable": False, "init": "scratch"}}
    v = variant_params(params, "dense")
    assert v["model"]["separable"] is False and v["finetune"]["init"] == "scratch"
    assert params["model"]["separable"] is True and params["finetune"]["init"] == "pretrain"
    assert v["model"]["decoder"] == params["model"]["decoder"]
    with pytest.raises(ConfigError, match="ablations.nope: no such variant"):
        variant_params(params, "nope")
