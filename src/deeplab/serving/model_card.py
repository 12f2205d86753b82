"""A registered version's model card, `MODEL_CARD.md` in the Hugging Face format: YAML front
matter (license, tags, datasets, metrics, a `model-index` of the evaluated scores), then what
the model is, its classes, data, recipe, scores, calibration, deployed formats and limits.

Every number comes from the files the evaluate and preprocess stages wrote (`metrics.json`,
`per_class_iou.csv`, the data summary) and from the model file's own record of how it was
trained; nothing is measured here.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import yaml

from ..data.classes import ClassList

PAPER = "arXiv 1802.02611"
TRAINING_KEYS = ("iterations", "batch_size", "crop_size", "lr", "loss")  # always shown


@dataclass(frozen=True)
class CardInputs:
    """What a card is written from."""

    name: str                         # the registered model's name
    classes: ClassList
    metrics: Mapping[str, Any]        # the evaluate stage's metrics.json
    per_class: Sequence[Mapping[str, Any]]  # per_class_iou.csv rows (class, iou, dice, ...)
    data: Mapping[str, Any]           # the preprocess stage's summary.json
    info: Mapping[str, Any]           # the model file's `info` (params, hashes, run, commit)
    source: str                       # data.source: synthetic | download | local
    license: str
    formats: Sequence[str]            # the deployed formats registered with the version
    model_io: str


def model_card(card: CardInputs) -> str:
    """The whole `MODEL_CARD.md`: front matter, then `card_body`."""
    front = yaml.safe_dump(front_matter(card), sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{front}---\n\n{card_body(card)}"


def _dataset(card: CardInputs) -> str:
    layout = card.data.get("layout", "unknown")
    return f"{card.source}-{layout}"


def front_matter(card: CardInputs) -> dict[str, Any]:
    """The Hugging Face card metadata, with a `model-index` of the main scores."""
    m, params = card.metrics, card.info.get("params") or {}
    backbone = (params.get("model") or {}).get("backbone", "unknown")
    metrics = [{"type": "mean_iou", "name": "mIoU (val, single scale)", "value": m["miou"]}]
    if "mdice" in m:
        metrics.append({"type": "dice", "name": "mean Dice (val, single scale)",
                        "value": m["mdice"]})
    return {
        "license": card.license,
        "library_name": "pytorch",
        "pipeline_tag": "image-segmentation",
        "tags": ["semantic-segmentation", "deeplabv3plus", backbone.replace(":", "-"), "dvc",
                 "mlflow"],
        "datasets": [_dataset(card)],
        "metrics": ["mean_iou"] + (["dice"] if "mdice" in m else []),
        "model-index": [{"name": card.name, "results": [{
            "task": {"type": "image-segmentation", "name": "Semantic segmentation"},
            "dataset": {"name": _dataset(card), "type": card.data.get("layout", "unknown"),
                        "split": "val"},
            "metrics": metrics}]}],
    }


def _hex(colour: Sequence[int]) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in colour)


def _number(value: Any) -> str:
    """4 decimals; empty for a class with no score (absent from the split)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(value) else f"{value:.4f}"


def _interval(m: Mapping[str, Any], key: str) -> str:
    low, high = m.get(f"{key}_low"), m.get(f"{key}_high")
    return f"{m[key]:.4f} (95% interval {low:.4f}-{high:.4f})" if low is not None else f"{m[key]:.4f}"


def recipe_lines(params: Mapping[str, Any]) -> list[str]:
    """The model settings, then per training schedule its main settings and every other one
    that differs from the schema's default (so a trainer option that is set shows)."""
    from ..core.schema import Schedule
    from ..model.deeplab import DeepLabV3Plus

    lines = []
    model = params.get("model") or {}
    if model:
        paper = {k: p.default for k, p in inspect.signature(DeepLabV3Plus).parameters.items()
                 if p.default is not inspect.Parameter.empty}
        shown = ", ".join(f"{k} {v}" for k, v in model.items() if v is not None)
        lines.append(f"- Model: {shown}.")
        differs = [f"{k} {paper[k]!r} -> {v!r}" for k, v in model.items()
                   if k in paper and k != "pretrained_backbone"
                   and (list(paper[k]) if isinstance(paper[k], tuple) else paper[k]) != v]
        if differs:
            lines.append(f"  Differs from the paper's network ({PAPER}, the defaults of "
                         f"`DeepLabV3Plus`): {'; '.join(differs)}.")
    defaults = {k: f.default for k, f in Schedule.model_fields.items() if not f.is_required()}
    for stage in ("pretrain", "finetune"):
        schedule = params.get(stage)
        if not schedule:
            continue
        shown = [f"{k} {schedule[k]}" for k in TRAINING_KEYS if k in schedule]
        set_ = [f"{k} {v}" for k, v in schedule.items()
                if k in defaults and k not in TRAINING_KEYS and v != _plain(defaults[k])]
        lines.append(f"- {stage}: {', '.join(shown)}"
                     + (f"; also set: {', '.join(set_)}" if set_ else "; nothing else set") + ".")
    return lines


def _plain(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


def card_body(card: CardInputs) -> str:
    """The card's text (also the registry version's description)."""
    m, info, data = card.metrics, card.info, card.data
    params = info.get("params") or {}
    per_class = {str(r["class"]): r for r in card.per_class}
    out = [f"# {card.name}: DeepLabV3+ semantic segmentation", "",
           f"DeepLabV3+ ({PAPER}) trained by this repository's DVC pipeline: {card.model_io}. "
           f"{len(card.classes)} classes.", "", "## Classes and palette", "",
           "| id | class | colour | IoU | Dice |", "|---|---|---|---|---|"]
    for k, (name, colour) in enumerate(zip(card.classes.names, card.classes.palette)):
        row = per_class.get(name, {})
        out.append(f"| {k} | {name} | `{_hex(colour)}` | {_number(row.get('iou'))} | "
                   f"{_number(row.get('dice'))} |")
    samples = data.get("samples", {})
    out += ["", "## Data", "",
            f"- Source `{card.source}`, layout `{data.get('layout', 'unknown')}`; images per split: "
            + ", ".join(f"{k} {v}" for k, v in samples.items()) + ".",
            f"- Training data hash `{info.get('data_hash', 'unknown')}`, validation data hash "
            f"`{info.get('val_hash', 'unknown')}` (the pipeline's hashes of the split lists, "
            f"which hold each image's hash); code at git commit `{info.get('git_commit', 'unknown')}`; "
            f"training run `{info.get('run_id', 'unknown')}` ({info.get('iterations', '?')} "
            f"iterations, initialised from {info.get('init', 'unknown')}).",
            "", "## Training recipe", "", *recipe_lines(params),
            "", "## Evaluation (validation split)", "",
            f"- mIoU {_interval(m, 'miou')}, single scale at the training output stride.",
            ]
    if "mdice" in m:
        out.append(f"- Mean Dice (F1) {_interval(m, 'mdice')}; mean precision "
                   f"{m.get('mprecision', float('nan')):.4f}, mean recall "
                   f"{m.get('mrecall', float('nan')):.4f} (over the classes the mIoU averages).")
    if "pixel_acc" in m and "best_strategy" in m:
        out.append(f"- Pixel accuracy {m['pixel_acc']:.4f}; best inference strategy "
                   f"`{m['best_strategy']}` at mIoU {m['best_strategy_miou']:.4f}.")
    if m.get("ece") is not None and m.get("temperature") is not None:
        out += ["", "## Calibration", "",
                f"- Temperature T = {m['temperature']:.4f} (fitted on half the validation "
                f"pixels); expected calibration error on the other half {m['ece']:.4f} before, "
                f"{m['ece_calibrated']:.4f} after."]
    deployed = m.get("deployed") or {}
    if deployed:
        machine = m.get("machine", "the evaluating machine")
        out += ["", "## Deployed formats", "",
                f"Measured on {machine} by the evaluate stage; registered with this version: "
                f"{', '.join(card.formats) or 'none (the PyTorch model only)'}.", "",
                "| format | mIoU | drop | ms per image |", "|---|---|---|---|"]
        for fmt, row in deployed.items():
            out.append(f"| {fmt} | {row['miou']:.4f} | {row['drop']:.4f} | {row['ms_per_image']:.2f} |")
    out += ["", "## Intended use and limits", ""]
    if card.source == "synthetic":
        out.append("- Trained on the pipeline's synthetic data (generated scenes in the real "
                   "dataset formats): a check that the pipeline runs end to end, not a model for "
                   "real photographs.")
    else:
        out.append(f"- Trained on the `{data.get('layout', 'unknown')}` data above; scores hold "
                   f"for images like its validation split. Check it on your own images before "
                   f"use.")
    out.append("- Served images above the serving limits are refused in one line; large photos "
               "run in sliding windows (docs/safety.md).")
    return "\n".join(out) + "\n"
