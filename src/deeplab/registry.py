"""Registering the finetuned model in the MLflow Model Registry with aliases.

The new version gets alias `champion` when its validation mIoU beats the current
champion's (or there is none), else `challenger`. A model whose weights hash equals an
already registered version creates no new version.
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

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def register(model_file: Path, metrics_file: Path, name: str, params: dict[str, Any],
             min_miou: float = 0.0) -> dict[str, Any]:
    """Log and register `model_file`; return what happened (version, alias, whether new)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from .tracking import start_stage_run

    metrics = json.loads(metrics_file.read_text())
    miou = float(metrics["miou"])
    digest = file_sha256(model_file)
    with start_stage_run("register", params, params["mlflow"]["experiment"]):
        client = MlflowClient()
        try:
            client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            client.create_registered_model(name, description="DeepLabV3+ semantic segmentation "
                                           "(21 PASCAL VOC classes)")
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
        model = load_model(model_file)
        example = np.zeros((1, 3, 64, 64), dtype=np.float32)
        with torch.no_grad():
            out = model(torch.from_numpy(example)).numpy()
        signature = infer_signature(example, out)
        mlflow.log_metrics({"val_miou": miou})
        info = mlflow.pytorch.log_model(model, name="model", signature=signature,
                                        input_example=example, registered_model_name=name,
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
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
