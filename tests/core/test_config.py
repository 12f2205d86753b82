"""params.yaml: the typed schema (every fault named by its key path, pydantic's words, bounds),
the YAML reader (duplicate keys, alias bombs) and the git hooks that guard DVC."""

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import pytest
import yaml
from helpers.repo import REPO

from deeplab.core.choices.backbones import BACKBONE_ALIASES, BACKBONES, OUTPUT_STRIDES
from deeplab.core.config import load_params, parse_params
from deeplab.core.errors import ConfigError
from deeplab.core.safe_yaml import read_yaml
from deeplab.core.schema import ModelConfig, Params

RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def write(tmp_path, mutate):
    params = copy.deepcopy(RAW)
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _bomb(levels: int = 9) -> str:
    text = 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for k in range(1, levels):
        text += f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]\n"
    return text


def _with(path: str, value):
    params = json.loads(json.dumps(PARAMS))
    *parents, key = path.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[key] = value
    return params



def test_default_params_are_valid(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert isinstance(params, Params) and params.model.output_stride == 16
    assert params.finetune.repeat_hard == 2 and params.pretrain.repeat_hard == 1


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p["finetune"].__setitem__("lr", "abc"), 'finetune.lr: Input should be a valid number, got "abc"'),
    (lambda p: p["pretrain"].__setitem__("lrr", 1), "pretrain.lrr: unknown key (did you mean 'lr'?)"),
    (lambda p: p.__setitem__("evalute", {}), "evalute: unknown key (did you mean 'evaluate'?)"),
    (lambda p: p["model"].__setitem__("output_stride", 12), "model.output_stride: Input should be 8, 16 or 32, got 12"),
    (lambda p: p["model"].__setitem__("output_stride", "16"), 'model.output_stride: Input should be 8, 16 or 32, got "16"'),
    (lambda p: p["pretrain"].__setitem__("batch_size", 0), "pretrain.batch_size: Input should be greater than 0"),
    (lambda p: p["pretrain"].__setitem__("batch_size", True), "pretrain.batch_size: Input should be a valid integer, got True"),
    (lambda p: p["pretrain"].__setitem__("scale_range", [2.0, 0.5]), "pretrain.scale_range: expected [low, high]"),
    (lambda p: p["pretrain"].__setitem__("scale_range", [0.5]), "pretrain.scale_range: List should have at least 2 items"),
    (lambda p: p["model"].__setitem__("dropout", float("nan")), "model.dropout: Input should be a finite number"),
    (lambda p: p["preprocess"].__setitem__("hard_classes", ["sofa", "sofa"]),
     "preprocess.hard_classes: expected a list without duplicates"),
    (lambda p: p["data"].__setitem__("classes", ["background", "crack", "crack"]),
     "data.classes: expected a list without duplicates"),
    (lambda p: p["data"].__setitem__("classes", ["background"]), "data.classes: List should have at least 2 items"),
    (lambda p: p["data"].__setitem__("layout", "pascal"),
     "data.layout: Input should be 'voc', 'folder', 'cityscapes', 'coco' or 'ade20k'"),
    (lambda p: p["data"].__setitem__("palette", [[0, 0, 256], [1, 2, 3]]),
     "data.palette[0][2]: Input should be less than or equal to 255"),
    (lambda p: p["data"].update(root="/a", voc_root="/b"), "data: voc_root and root are the same setting"),
    (lambda p: p["data"]["synthetic"].__setitem__("coco_train_images", 0),
     "data.synthetic: coco_train_images and coco_val_images are both 0"),
    (lambda p: p["model"].pop("decoder"), "model.decoder: missing key"),
    (lambda p: p.pop("model"), "model: missing key"),
    (lambda p: p.__setitem__("model", [1]), "model: expected a mapping of keys"),
    (lambda p: p["data"].__setitem__("root", ""), 'data.root: String should have at least 1 character, got ""'),
    (lambda p: p["ablations"]["no_sc"].__setitem__("seperable", False),
     "ablations.no_sc.seperable: unknown key (did you mean 'separable'?)"),
    (lambda p: p["ablations"].__setitem__("No-Dec", {"decoder": False}),
     "ablations.No-Dec: a variant name must be lower-case"),
    (lambda p: p["ablations"].__setitem__("x", {"init": "coco"}),
     "ablations.x.init: expected pretrain, imagenet, scratch, a model file (.pt) or a models:/ URI"),
    (lambda p: p["ablations"].__setitem__("x", {}), "ablations.x: expected a mapping of settings to change"),
    (lambda p: p["ablations"].__setitem__("x", {"decoder": None}), "ablations.x: decoder: expected a value"),
    (lambda p: p["register"]["inference"].__setitem__("output_stride", 4),
     "register.inference.output_stride: Input should be 8, 16 or 32"),
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
    assert str(err.value).splitlines() == ['model.decoder: Input should be a valid boolean, got "yes"',
                                           "finetune.lr: Input should be greater than 0, got -1"]


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
    with pytest.raises(ConfigError, match="output_stride: Input should be 8, 16 or 32"):
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
    """Backbones and output strides are defined once (`deeplab.core.choices.backbones`)."""
    fields = ModelConfig.model_fields
    assert set(get_args(fields["output_stride"].annotation)) == set(OUTPUT_STRIDES)
    for name in BACKBONES + ("timm:convnext_atto", "timm:resnet18.a1_in1k"):
        raw = copy.deepcopy(RAW)
        raw["model"]["backbone"] = name
        assert parse_params(raw, sections=("model",)).model.backbone == name
    for alias, name in BACKBONE_ALIASES.items():
        raw = copy.deepcopy(RAW)
        raw["model"]["backbone"] = alias
        assert parse_params(raw, sections=("model",)).model.backbone == name
    for name, message in [("resnet18", "model.backbone: Value error, unknown backbone 'resnet18'; "
                                       "choose one of resnet50, resnet101, xception65, mobilenet_v2 "
                                       "or timm:<name>"),
                          ("timm:convnext_nope", "model.backbone: Value error, backbone "
                                                 "timm:convnext_nope: timm 1.0.31 has no model "
                                                 "'convnext_nope'; timm has e.g. convnext_atto"),
                          ("timm:../x", "backbone timm:../x: not a timm model name")]:
        raw = copy.deepcopy(RAW)
        raw["model"]["backbone"] = name
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_params(raw, sections=("model",))


def test_model_settings_build_the_network(repo_root):
    from deeplab.engine.init import build_model

    params = load_params(repo_root / "params.yaml")
    model = build_model(params.model, 21)
    assert {k: model.config[k] for k in params.model.network_kwargs()} == params.model.network_kwargs()


@pytest.mark.parametrize("path, value, message", [
    ("seed", 2**70, "seed: Input should be less than or equal to 4294967295"),
    ("data.synthetic.seed", 2**40, "data.synthetic.seed: Input should be less than or equal to"),
    ("pretrain.iterations", 10**30, "pretrain.iterations: Input should be less than or equal to 10000000"),
    ("evaluate.scales", [1000.0], "evaluate.scales[0]: Input should be less than or equal to 4"),
    ("register.inference.scales", [1e-9], "register.inference.scales[0]: Input should be greater"),
    ("evaluate.pad_to", 10**6, "evaluate.pad_to: Input should be less than or equal to 8192"),
    ("finetune.crop_size", 10**6, "finetune.crop_size: Input should be less than or equal to 8192"),
    ("register.model_name", "a..b", "register.model_name: expected a name"),
    ("mlflow.experiment", "../../etc", "mlflow.experiment: expected a name"),
    ("mlflow.experiment", "two\nlines", "mlflow.experiment: expected a name"),
])
def test_values_beyond_sane_bounds_are_refused(path, value, message):
    with pytest.raises(ConfigError) as info:
        parse_params(_with(path, value))
    assert message in str(info.value)


def test_the_default_params_and_the_recipes_stay_within_the_bounds():
    from deeplab.sweep.recipe import apply_recipe, load_recipe

    params = load_params(REPO / "params.yaml")
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        apply_recipe(params, load_recipe(recipe), str(recipe))


def test_a_billion_laughs_params_file_is_refused_in_under_a_second(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text() + _bomb())
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="expand to more than 100,000 values"):
        load_params(path)
    assert time.perf_counter() - start < 1.0


@pytest.mark.slow
def test_the_git_hooks_refuse_a_bomb_before_dvc_sees_it(tmp_path):
    """The documented guard (`git config core.hooksPath .githooks`): a commit of a bomb is
    refused, and one arriving by a merge is reported."""
    import shutil

    work = tmp_path / "repo"
    work.mkdir()
    shutil.copytree(REPO / ".githooks", work / ".githooks")
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def git(*args, check=True):
        return subprocess.run(["git", *args], cwd=work, env=env, capture_output=True, text=True,
                              check=check, timeout=60)

    git("init", "-q")
    git("config", "core.hooksPath", ".githooks")
    git("add", ".")
    git("commit", "-qm", "good params")
    (work / "params.yaml").write_text((REPO / "params.yaml").read_text() + _bomb())
    git("add", "params.yaml")
    refused = git("commit", "-qm", "a bomb", check=False)
    assert refused.returncode != 0 and "expand to more than" in refused.stderr
    (work / "params.yaml").write_text((REPO / "params.yaml").read_text().replace(
        "seed: 0", "seed: 0\nseed: 1", 1))
    git("add", "params.yaml")
    refused = git("commit", "-qm", "a duplicate", check=False)
    assert refused.returncode != 0 and "key 'seed' appears twice" in refused.stderr


def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(tmp_path):
    text = (REPO / "params.yaml").read_text()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("lr: 0.05"))
    lines.insert(at + 1, "  lr: 0.5")
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"key 'lr' appears twice in one mapping \(lines {at + 1} "
                                          rf"and {at + 2}\)"):
        load_params(path)
    assert read_yaml(REPO / "params.yaml") == PARAMS  # the real file reads as before
