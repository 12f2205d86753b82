"""The papers' recipes: valid against the schema, every value with its source."""

import pytest
from helpers.repo import REPO

from deeplab.core.config import load_params
from deeplab.core.errors import ConfigError
from deeplab.sweep.recipe import apply_recipe, load_recipe, overrides

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
        from deeplab.model.inference import padded_size
        assert (padded_size(1024, 16), padded_size(2048, 16)) == (1025, 2049)
    else:
        assert finetune.crop_size == 513
        assert finetune.init == ("imagenet" if path.stem.endswith("no_coco") else "pretrain")
    assert all(" " not in arg for arg in overrides(recipe))


def test_a_bad_recipe_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: resnet152\n")
    with pytest.raises(ConfigError, match="bad.yaml: model.backbone: Value error, unknown backbone 'resnet152'; choose one of resnet50, resnet101"):
        apply_recipe(load_params(REPO / "params.yaml"), load_recipe(bad), str(bad))
