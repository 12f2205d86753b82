"""The model card (`MODEL_CARD.md`, Hugging Face format): the committed card quotes the
committed reports number for number; the recipe shows what differs from the defaults; the
registry description fits MLflow's column."""

import json
import math
import re

import pandas as pd
import pytest
import yaml
from helpers.repo import REPO

from deeplab.data.classes import ClassList, voc_palette
from deeplab.serving.model_card import CardInputs, model_card, recipe_lines
from deeplab.serving.registry import DESCRIPTION_LIMIT, Registration, description


def split(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    front, body = card.removeprefix("---\n").split("\n---\n", 1)
    return yaml.safe_load(front), body


def test_the_committed_card_quotes_the_committed_reports():
    card = (REPO / "reports/MODEL_CARD.md").read_text()
    front, body = split(card)
    metrics = json.loads((REPO / "reports/metrics.json").read_text())
    scores = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert scores == {"mean_iou": metrics["miou"], "dice": metrics["mdice"]}
    assert front["license"] == yaml.safe_load((REPO / "params.yaml").read_text())["register"]["license"]
    assert f"mIoU {metrics['miou']:.4f} (95% interval {metrics['miou_low']:.4f}-" \
           f"{metrics['miou_high']:.4f})" in body
    assert f"Mean Dice (F1) {metrics['mdice']:.4f} (95% interval {metrics['mdice_low']:.4f}-" \
           f"{metrics['mdice_high']:.4f})" in body
    assert f"Temperature T = {metrics['temperature']:.4f}" in body
    assert f"{metrics['ece']:.4f} before, {metrics['ece_calibrated']:.4f} after" in body
    assert f"Measured on {metrics['machine']}" in body
    for fmt, row in metrics["deployed"].items():
        assert f"| {fmt} | {row['miou']:.4f} | {row['drop']:.4f} | {row['ms_per_image']:.2f} |" in body
    table = pd.read_csv(REPO / "reports/per_class_iou.csv")
    rows = re.findall(r"^\| (\d+) \| (.+?) \| `#[0-9a-f]{6}` \| ([\d.]*) \| ([\d.]*) \|$", body, re.M)
    assert [name for _, name, _, _ in rows] == list(table["class"])
    for (_, _, iou, dice), (_, want) in zip(rows, table.iterrows()):
        for text, value in ((iou, want["iou"]), (dice, want["dice"])):
            assert text == ("" if math.isnan(value) else f"{value:.4f}")
    assert "synthetic data" in body  # the default profile's limit


def inputs(**change) -> CardInputs:
    params = {"model": {"backbone": "mobilenet_v2", "output_stride": 16, "aspp_channels": 64,
                        "multi_grid": [1, 2, 4], "pretrained_backbone": None},
              "pretrain": {"iterations": 300, "batch_size": 8, "crop_size": 65, "lr": 0.01,
                           "loss": "ce", "keep": "last", "warmup": None, "accumulate": 1},
              "finetune": {"iterations": 500, "batch_size": 8, "crop_size": 65, "lr": 0.007,
                           "loss": "ce+dice", "keep": "ema", "ema": {"decay": 0.999, "every": 1},
                           "accumulate": 2, "clip_grad_norm": None}}
    classes = ClassList(("background", "crack"), tuple(voc_palette(2)))
    base = dict(name="cracks", classes=classes,
                metrics={"miou": 0.5, "miou_low": 0.4, "miou_high": 0.6},
                per_class=[{"class": "background", "iou": 0.9, "dice": 0.95},
                           {"class": "crack", "iou": float("nan"), "dice": 0.0}],
                data={"layout": "folder", "samples": {"train": 10, "val": 4}},
                info={"params": params, "data_hash": "abc"}, source="local", license="apache-2.0",
                formats=[], model_io="uint8 in, labels out")
    return CardInputs(**(base | change))


def test_the_recipe_shows_the_options_set_and_the_differences_from_the_paper():
    lines = recipe_lines(inputs().info["params"])
    assert lines[0] == ("- Model: backbone mobilenet_v2, output_stride 16, aspp_channels 64, "
                        "multi_grid [1, 2, 4].")
    assert lines[1] == ("  Differs from the paper's network (arXiv 1802.02611, the defaults of "
                        "`DeepLabV3Plus`): backbone 'resnet101' -> 'mobilenet_v2'; "
                        "aspp_channels 256 -> 64.")
    assert lines[2] == "- pretrain: iterations 300, batch_size 8, crop_size 65, lr 0.01, loss ce; nothing else set."
    assert lines[3] == ("- finetune: iterations 500, batch_size 8, crop_size 65, lr 0.007, loss ce+dice; "
                        "also set: keep ema, ema {'decay': 0.999, 'every': 1}, accumulate 2.")


def test_a_card_of_local_data_parses_and_shows_what_it_has():
    card = model_card(inputs())
    front, body = split(card)
    assert front["license"] == "apache-2.0" and front["datasets"] == ["local-folder"]
    assert front["pipeline_tag"] == "image-segmentation" and "mobilenet_v2" in front["tags"]
    assert "| 0 | background | `#000000` | 0.9000 | 0.9500 |" in body
    assert "| 1 | crack | `#800000` |  | 0.0000 |" in body  # no IoU: absent from the split
    assert "synthetic" not in body and "## Calibration" not in body  # nothing measured: no section
    assert "images per split: train 10, val 4" in body


def test_the_registry_description_is_the_card_text_within_mlflows_column():
    def reg(card: str) -> Registration:
        return Registration("m", None, {}, "", {"dvc.exp": "workspace"}, 0.5, 0.0, "never",
                            inputs().classes, None, card)

    card = model_card(inputs())
    assert description(reg(card)) == split(card)[1].lstrip()
    many = ClassList(tuple(f"class_{i}" for i in range(400)), tuple(voc_palette(400)))
    long = model_card(inputs(classes=many))
    text = description(reg(long))
    assert len(text) <= DESCRIPTION_LIMIT < len(split(long)[1])
    assert text.endswith("(The card continues in the version's artifacts: MODEL_CARD.md.)\n")
    assert description(reg("")).startswith("DeepLabV3+ semantic segmentation, 2 classes")


def test_a_wrong_license_is_one_line():
    from deeplab.core.config import parse_params
    from deeplab.core.errors import ConfigError

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["register"]["license"] = "Not A License!"
    with pytest.raises(ConfigError, match="register.license: String should match pattern"):
        parse_params(raw, sections=("register",))
