"""Registering the finetuned model in the MLflow Model Registry with aliases.

The registered model is a `Segmenter` logged with `mlflow.pytorch`: its pyfunc flavour takes
uint8 RGB images `N x H x W x 3` and returns uint8 label maps, preprocessing and inference
strategy included; the `deeplab` package travels with it (code_paths). The new version gets
alias `champion` when its validation mIoU beats the current champion's (or there is none),
else `challenger`. A model whose weights and strategy hash equal an already registered
version creates no new version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_model
from .segmenter import Segmenter

log = logging.getLogger(__name__)


def model_digest(path: Path, strategy: dict[str, Any]) -> str:
    """sha256 of the model file and the inference strategy registered with it."""
    h = hashlib.sha256(path.read_bytes())
    h.update(json.dumps(strategy, sort_keys=True).encode())
    return h.hexdigest()


def signature():
    """uint8 RGB images `N x H x W x 3` of any size -> uint8 label maps `N x H x W`."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
                          outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]))


def register(model_file: Path, metrics_file: Path, name: str, params: dict[str, Any],
             min_miou: float = 0.0) -> dict[str, Any]:
    """Log and register `model_file`; return what happened (version, alias, whether new)."""
    import mlflow
    from mlflow import MlflowClient

    from .tracking import start_stage_run

    metrics = json.loads(metrics_file.read_text())
    miou = float(metrics["miou"])
    strategy = dict(params["register"]["inference"])
    digest = model_digest(model_file, strategy)
    with start_stage_run("register", params, params["mlflow"]["experiment"]):
        client = MlflowClient()
        try:
            client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            client.create_registered_model(name, description="DeepLabV3+ semantic segmentation "
                                           "(21 PASCAL VOC classes): uint8 RGB N x H x W x 3 in, "
                                           "uint8 label maps N x H x W out")
        existing = client.search_model_versions(f"name='{name}' and tag.model_sha256='{digest}'")
        if existing:
            version = existing[0]
            log.info("model unchanged (sha256 %s...): already version %s", digest[:12], version.version)
            aliases = list(client.get_model_version(name, version.version).aliases)
            return {"name": name, "version": int(version.version), "new": False, "aliases": aliases,
                    "miou": miou}
        if miou < min_miou:
            raise ValueError(f"validation mIoU {miou:.4f} is below register.min_miou {min_miou}; "
                             f"not registering")
        served = Segmenter(load_model(model_file), strategy["output_stride"], strategy["scales"],
                           strategy["flip"])
        example = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
        mlflow.log_metrics({"val_miou": miou})
        mlflow.log_params({f"inference.{k}": v for k, v in strategy.items()})
        info = mlflow.pytorch.log_model(
            served, name="model", signature=signature(), input_example=example,
            registered_model_name=name, code_paths=[str(Path(__file__).parent)],
            serialization_format="pickle",  # the eager module: any image size, strategy editable
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"numpy=={np.__version__}"])
        version = int(info.registered_model_version)
        client.set_model_version_tag(name, str(version), "model_sha256", digest)
        client.set_model_version_tag(name, str(version), "val_miou", f"{miou:.6f}")
        try:
            champion = client.get_model_version_by_alias(name, "champion")
            best = float(champion.tags.get("val_miou", "-inf"))
        except mlflow.exceptions.MlflowException:
            champion, best = None, float("-inf")
        alias = "champion" if miou > best else "challenger"
        client.set_registered_model_alias(name, alias, str(version))
        log.info("registered %s version %d as @%s (val mIoU %.4f; champion had %s)", name, version,
                 alias, miou, "none" if champion is None else f"{best:.4f}")
        return {"name": name, "version": version, "new": True, "aliases": [alias], "miou": miou}
