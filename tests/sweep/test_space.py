"""The sweep's search space checked against the params schema before any trial, and a
trial's overrides (the main model alone unless the space names an ablation). The sweep itself,
on PostgreSQL with workers in clones: tests/pipeline/test_sweep.py."""

import pytest
from helpers.repo import REPO

from deeplab.core.config import parse_params
from deeplab.core.errors import ConfigError
from deeplab.core.safe_yaml import read_yaml
from deeplab.sweep.space import check_space, main_only, overrides


def _sweep(space, **settings):
    raw = read_yaml(REPO / "params.yaml")
    raw["sweep"] = {**raw["sweep"], **settings, "space": space}
    return raw, parse_params(raw).sweep


def test_the_space_is_checked_against_the_params_schema_before_any_trial():
    raw, cfg = _sweep({"finetune.lrr": [0.1], "finetune.lr": {"low": 0.01, "high": 50, "log": True},
                       "finetune.loss": ["ce", "dyce"], "model.backbone": ["resnet101"]})
    with pytest.raises(ConfigError) as err:
        check_space(raw, cfg)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("sweep.space.finetune.lrr: not a key of params.yaml (finetune.lrr: "
                               "unknown key (did you mean 'lr'?)")
    assert lines[1:] == [
                     "sweep.space.finetune.lr: 50 is refused (finetune.lr: Input should be less "
                     "than or equal to 10, got 50)",
                     "sweep.space.finetune.loss: 'dyce' is refused (finetune.loss: 'dyce' is not a "
                     "loss: expected one of ce, ohem, focal, dice, lovasz, or a weighted sum such "
                     "as ce+dice or ce+0.5*lovasz, got \"dyce\")"]
    with pytest.raises(ConfigError, match="sweep.space.seed: expected low < high"):
        parse_params({**raw, "sweep": {**raw["sweep"], "space": {"seed": {"low": 3, "high": 1}}}})
    with pytest.raises(ConfigError, match="sampler grid needs lists or integer ranges"):
        _sweep({"finetune.lr": {"low": 0.01, "high": 0.1}}, sampler="grid")


def test_a_trial_trains_the_main_model_alone_unless_the_space_names_an_ablation():
    raw, cfg = _sweep({"finetune.lr": {"low": 0.01, "high": 0.2, "log": True}})
    dropped = main_only(raw, cfg)
    assert dropped == sorted(raw["ablations"]) and dropped
    assert overrides({"finetune.lr": 0.05}, dropped) == [
        "-S", "finetune.lr=0.05", *[a for name in dropped for a in ("-S", f"~ablations.{name}")]]
    raw, cfg = _sweep({"ablations.no_sc.output_stride": [8, 16]})
    assert main_only(raw, cfg) == []
    check_space(raw, cfg)
