"""Where a training stage's weights come from: the pretrain checkpoint (whole, or the tensors
an ablation variant shares with it), backbone weights, random initialisation, or a transfer
from another trained model (a file or a `models:/` URI) with the head re-initialised when the
class count differs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, ModelFileError
from ..core.hashing import files_hash
from ..core.schema import ModelConfig, Params
from ..model import DeepLabV3Plus
from ..model.files import read_model_file, state_digest

log = logging.getLogger(__name__)
NO_PRETRAINING = "no COCO data to pretrain on"


def build_model(cfg: ModelConfig, num_classes: int,
                pretrained_backbone: str | None = None) -> DeepLabV3Plus:
    """The network described by `params.model` (with backbone weights if given)."""
    try:
        return DeepLabV3Plus(num_classes=num_classes, pretrained_backbone=pretrained_backbone,
                             **cfg.network_kwargs())
    except FileNotFoundError as exc:  # model.pretrained_backbone names a missing file
        raise ConfigError(f"model.pretrained_backbone: {exc}") from None
    except ValueError as exc:  # a weights file of another network
        raise ModelFileError(f"model.pretrained_backbone: {exc}") from None


def _transfer_source(init: str) -> tuple[dict[str, Any], str]:
    """The checked model-file contents behind `finetune.init` (a file or a models:/ URI), and
    a digest of them."""
    if init.startswith(("models:/", "runs:/")):
        from ..tracking.registry import load_registered  # MLflow: loaded only for a URI

        state, _ = load_registered(init)
    else:
        state = read_model_file(Path(init).expanduser())
    return state, state_digest(state, {})


def _transfer(model: DeepLabV3Plus, state: dict[str, Any], source: str, key: str) -> str:
    """Load the tensors of another trained model whose names and shapes match; the classifier
    of another class count keeps its fresh initialisation."""
    theirs, ours = state["config"].get("backbone"), model.config["backbone"]
    if theirs != ours:
        raise ModelFileError(f"{key}: {source} is a {theirs} model, this one is {ours}; set "
                             f"model.backbone: {theirs}, or start from a {ours} model")
    fresh = model.load_matching_weights(state["state_dict"])
    if len(fresh) == len(model.state_dict()):
        raise ModelFileError(f"{key}: {source} shares no tensor with this model (no name and "
                             f"shape match), so nothing would be transferred; start from a model "
                             f"of this architecture, or set {key}: scratch to train from scratch")
    log.info("from %s: %d tensors loaded; not loaded (kept their initialisation): %s", source,
             len(model.state_dict()) - len(fresh), ", ".join(fresh) or "none")
    return f"model {source}" + (f" ({len(fresh)} tensors re-initialised)" if fresh else "")


@dataclass(frozen=True)
class Start:
    """What a stage starts from: the model, where its weights came from (logged), and the key
    a checkpoint records for them (a digest of the init file, or the description)."""

    model: DeepLabV3Plus
    origin: str
    key: str


def initial_model(stage: str, params: Params, num_classes: int, init_file: Path | None,
                  partial: bool = False) -> Start:
    """The model a stage starts from, where its weights came from, and their key.

    With `partial`, a pretrain checkpoint of another architecture (an ablation variant)
    gives the tensors whose names and shapes match; the rest keep their initialisation.
    """
    model_cfg = params.model
    init = params.finetune.init if stage == "finetune" else "imagenet"
    if init == "pretrain":
        state = read_model_file(init_file)
        if state["info"].get("skipped"):
            raise ConfigError(
                f"finetune.init is 'pretrain' but the pretrain stage had {NO_PRETRAINING} "
                f"(data.coco_root is null, or synthetic.coco_train_images is 0); set finetune.init "
                f"to scratch, imagenet (with model.pretrained_backbone), or a model file or "
                f"models:/ URI to transfer from")
        model = build_model(model_cfg, num_classes)
        if not partial:
            try:
                model.load_weights(state["state_dict"], source=str(init_file))
            except ValueError as exc:
                raise ModelFileError(str(exc)) from None
            return Start(model, f"pretrain checkpoint {init_file}", files_hash([init_file]))
        fresh = model.load_matching_weights(state["state_dict"])
        log.info("from %s: %d tensors re-initialised (%s)", init_file, len(fresh),
                 ", ".join(sorted({k.rsplit(".", 2)[0] for k in fresh}))[:300] or "none")
        return Start(model, f"pretrain checkpoint {init_file}" + (
            f" (matching tensors; {len(fresh)} re-initialised)" if fresh else ""),
            files_hash([init_file]))
    if init == "imagenet" and model_cfg.pretrained_backbone:
        origin = f"backbone {model_cfg.pretrained_backbone}"
        return Start(build_model(model_cfg, num_classes, model_cfg.pretrained_backbone), origin, origin)
    if stage == "finetune" and init == "imagenet":
        raise ConfigError("finetune.init is 'imagenet' but model.pretrained_backbone is null; set "
                          "it to 'imagenet' or a weights file")
    model = build_model(model_cfg, num_classes)
    if init in ("scratch", "imagenet"):
        return Start(model, "random initialisation", "random initialisation")
    state, digest = _transfer_source(init)
    return Start(model, _transfer(model, state, init, "finetune.init"), digest)


