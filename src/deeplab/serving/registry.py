"""Registering the finetuned model in the MLflow Model Registry with aliases.

The registered model is an MLflow pyfunc "from code" (`pyfunc_model.py`): uint8 RGB images
`N x H x W x 3` in, uint8 label maps out. Its weights travel as the model file (read with
`weights_only=True`), its inference strategy as JSON, and the `deeplab` package as
`code_paths`; nothing is pickled. In the workspace (`dvc repro`) the new version's alias
follows `register.promote`: `if_better` (champion when its validation mIoU beats the current
champion's, or there is none; else challenger), `always`, or `never`. A version registered by
a `dvc exp run` (a sweep point) gets no alias: `@champion` moves only by that rule or by
`python -m deeplab.serving.promote`, and the new champion records who, when and why.

One model (sha256 of the network config, its tensors and the strategy) is one version,
whatever happens: the version is
created with its `model_sha256` tag in one call, concurrent registrations of the same model
are collapsed to the lowest version, a rerun after a crash finds that version and gives it
its alias, and on a local SQLite store registrations take turns under a file lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..core.errors import RegistryError, first_line
from ..core.hashing import value_sha256
from ..core.io import write_text
from ..core.schema import Params
from ..data.classes import ClassList
from ..model.files import classes_of, read_model_file, state_digest
from ..model.inference import InferenceStrategy
from .deploy import Deployment, check_belongs, deployment
from .model_card import CardInputs, model_card
from .promote import assign_alias

log = logging.getLogger(__name__)
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
CARD_NAME = "MODEL_CARD.md"
DESCRIPTION_LIMIT = 5000  # MLflow's column for a version's description


def signature():
    """The `output` (`labels` | `png` | `probabilities` | `confidence`) and `confidence`
    (`maxprob` | `margin` | `entropy`) parameters; inputs are checked by the model itself, since
    it takes two kinds (uint8 `N x H x W x 3` arrays, or a table of base64 PNG/JPEG images),
    which one MLflow input schema cannot describe (`pyfunc_model.py`)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    return ModelSignature(params=ParamSchema([ParamSpec("output", "string", "labels"),
                                              ParamSpec("confidence", "string", "maxprob")]))


def read_miou(metrics_file: Path) -> float:
    """The `miou` of the evaluate stage's metrics file; RegistryError naming what is wrong."""
    if not metrics_file.is_file():
        raise RegistryError(f"{metrics_file}: not found (run the evaluate stage)")
    try:
        metrics = json.loads(metrics_file.read_text())
        value = metrics["miou"]
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{metrics_file}: not valid JSON ({exc})") from None
    except (KeyError, TypeError):
        raise RegistryError(f"{metrics_file}: no 'miou' value (run the evaluate stage)") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        # NaN fails the range check too: it would compare as neither better nor worse
        raise RegistryError(f"{metrics_file}: 'miou' must be a number in [0, 1], got {value!r}")
    return float(value)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a local SQLite tracking database (others: no lock needed here,
    the version de-duplication below still holds)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(uri.removeprefix("sqlite:///") + ".lock")
    try:
        lock.acquire(timeout=600)  # other registrations take seconds each
    except Timeout:
        raise RegistryError(f"tracking store {uri}: its lock {lock.lock_file} stayed taken for "
                            f"10 minutes (or cannot be created)") from None
    try:
        yield
    finally:
        lock.release()


def _store_errors():
    """The exception types by which a tracking store says no (or cannot be reached)."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return (MlflowException, sqlalchemy.exc.SQLAlchemyError, requests.exceptions.RequestException,
            OSError)


def _versions_with_digest(client, name: str, digest: str, deploy_digest: str) -> list[int]:
    found = client.search_model_versions(f"name='{name}' and tag.model_sha256='{digest}' and "
                                         f"tag.deploy_sha256='{deploy_digest}'")
    return sorted(int(v.version) for v in found)


MODEL_IO = "uint8 RGB N x H x W x 3 in, uint8 label maps N x H x W out"


def classes_key(names: Sequence[str]) -> str:
    """A short digest of a class list (names in id order): which versions are comparable."""
    return value_sha256(list(names))[:16]


def _classes_of_version(version: Any) -> tuple[str | None, list[str]]:
    """(digest of the class list, the first names) of a registered version: its `classes.*`
    tags, or, for versions registered before them, the names its description lists."""
    if "classes.sha256" in version.tags:
        return version.tags["classes.sha256"], json.loads(version.tags.get("classes.names", "[]"))
    text = version.description or ""
    if "Classes: " not in text or text.endswith(", ..."):
        return None, []
    names = [item.split(" ", 1)[1] for item in text.split("Classes: ", 1)[1].split(", ")]
    return classes_key(names), names


def check_same_classes(client: Any, reg: "Registration") -> None:
    """RegistryError in one line when `reg.name` already holds versions of another class list:
    `models:/name@champion` stands for one dataset's classes, so a model of other classes gets
    a name of its own (`register.model_name`) instead of replacing what others serve."""
    ours = list(reg.classes.names)
    for version in client.search_model_versions(f"name='{reg.name}'"):
        key, theirs = _classes_of_version(version)
        if key is not None and key != classes_key(ours):
            def shown(names: list[str]) -> str:
                return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")

            raise RegistryError(
                f"register.model_name: '{reg.name}' holds models of other classes (version "
                f"{version.version}: {shown(theirs)}); this one has {len(ours)} ({shown(ours)}). "
                f"Give this dataset its own register.model_name, so that @champion keeps meaning "
                f"one dataset's classes")


def describe(classes: ClassList) -> str:
    """A version's description: what goes in and out, and the classes by name."""
    names = ", ".join(f"{k} {n}" for k, n in enumerate(classes.names))
    if len(names) > 3000:
        names = names[:3000] + ", ..."
    return (f"DeepLabV3+ semantic segmentation, {len(classes)} classes: {MODEL_IO} (class ids; "
            f"0..{len(classes) - 1}). Classes: {names}")


@dataclass(frozen=True)
class Registration:
    """What one `register` run registers, and how."""

    name: str
    model_file: Path
    strategy: dict[str, Any]
    digest: str
    tags: dict[str, str]       # lineage: training run, data, commit, params, experiment
    miou: float
    min_miou: float
    promote: str
    classes: ClassList
    deployment: Deployment     # the deployed files kept, the serving settings
    card: str = ""             # MODEL_CARD.md

    @property
    def experiment(self) -> str:
        """The `dvc exp run` registering (or 'workspace')."""
        return self.tags["dvc.exp"]


def pipeline_result(metrics_file: Path) -> str:
    """`mIoU 0.820 [0.787, 0.838] · no_decoder 0.429 · ...` from evaluate's metrics."""
    metrics = json.loads(metrics_file.read_text())
    text = f"mIoU {metrics['miou']:.3f}"
    if "miou_low" in metrics and "miou_high" in metrics:
        text += f" [{metrics['miou_low']:.3f}, {metrics['miou_high']:.3f}]"
    return " · ".join([text] + [f"{k} {v:.3f}" for k, v in metrics.get("variants", {}).items()])


def register(model_file: Path, metrics_file: Path, params: Params,
             deployed: Path | None = None, per_class: Path | None = None,
             data_summary: Path | None = None, card: Path | None = None) -> dict[str, Any]:
    """Log and register `model_file` (with the files of the deploy folder `deployed` that stay
    within `deploy.max_drop`) and its model card (written to `card` too, from `metrics_file`,
    the `per_class` IoU table and the preprocess stage's `data_summary`); return what
    happened (version, alias, whether new)."""
    from ..tracking.runs import dvc_experiment, finish_pipeline, start_stage_run
    from ..tracking.store import check_store, tracking_uri

    cfg = params.registration
    miou = read_miou(metrics_file)
    evaluated = json.loads(metrics_file.read_text())
    rows = evaluated.get("deployed", {}) if deployed else {}
    max_drop = params.deploy.max_drop if params.deploy is not None else 0.01
    state = read_model_file(model_file)
    if deployed is not None:
        check_belongs(deployed, state_digest(state, {}), classes_of(state))
    kept = deployment(cfg.serve, max_drop, deployed, rows, float(evaluated.get("temperature", 1.0)))
    strategy = InferenceStrategy.from_dict(cfg.inference.model_dump()).as_dict()
    reg = Registration(cfg.model_name, model_file, strategy, state_digest(state, strategy),
                       {**_training_lineage(state["info"]), "dvc.exp": dvc_experiment()},
                       miou, cfg.min_miou, cfg.promote, classes_of(state), kept,
                       model_card(CardInputs(
                           cfg.model_name, classes_of(state), evaluated, _read_rows(per_class),
                           _read_json(data_summary), state["info"],
                           params.data.source if params.data is not None else "unknown",
                           cfg.license, kept.formats, MODEL_IO)))
    if card is not None:
        write_text(card, reg.card)
    uri = tracking_uri()
    check_store(uri)  # an unwritable or unreachable store: one line, before taking its lock
    try:
        with store_lock(uri), start_stage_run("register", params, params.mlflow.experiment) as run:
            result = _register_locked(run.info.run_id, reg)
        finish_pipeline(run.info.run_id, pipeline_result(metrics_file))  # the last stage
        return result
    except _store_errors() as exc:
        raise RegistryError(f"tracking store {uri}: {first_line(exc)}") from None


def _register_locked(run_id: str, reg: Registration) -> dict[str, Any]:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_registered_model(reg.name)
    except MlflowException:
        with contextlib.suppress(MlflowException):  # another process may create it first
            client.create_registered_model(
                reg.name, description=f"DeepLabV3+ semantic segmentation: {MODEL_IO}; each "
                                      f"version's description names its classes")
    existing = _versions_with_digest(client, reg.name, reg.digest, reg.deployment.digest)
    new = not existing
    if new:
        check_same_classes(client, reg)
        if reg.miou < reg.min_miou:
            raise RegistryError(f"validation mIoU {reg.miou:.4f} is below register.min_miou "
                                f"{reg.min_miou}; not registering")
        # a param, not a metric: the val_miou charts hold the training curves only
        mlflow.log_params({"val_miou": f"{reg.miou:.4f}",
                           "temperature": reg.deployment.serve.get("temperature", 1.0),
                           **{f"inference.{k}": v for k, v in reg.strategy.items()}})
        mine = _log_and_create_version(client, reg, run_id)
        existing = _versions_with_digest(client, reg.name, reg.digest, reg.deployment.digest)
        if existing and existing[0] != mine:  # a concurrent registration was first
            client.delete_model_version(reg.name, str(mine))
            new = False
    version = existing[0]
    if not new:
        log.info("model unchanged (sha256 %s...): already version %d", reg.digest[:12], version)
    aliases = assign_alias(client, reg.name, version, reg.miou, reg.promote, reg.experiment,
                           reg.tags.get("data.val_hash"))
    return {"name": reg.name, "version": version, "new": new, "aliases": aliases, "miou": reg.miou}


def _log_and_create_version(client, reg: Registration, run_id: str) -> int:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        strategy_file = Path(tmp) / "strategy.json"
        strategy_file.write_text(json.dumps(reg.strategy, indent=2))
        serve_file = Path(tmp) / "serve.json"
        serve_file.write_text(json.dumps(reg.deployment.serve, indent=2))
        card_file = Path(tmp) / CARD_NAME
        card_file.write_text(reg.card)
        deployed = {name.replace(".", "_"): str(path) for name, path in reg.deployment.files.items()}
        example = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE),
            artifacts={"model_file": str(reg.model_file), "strategy": str(strategy_file),
                       "serve": str(serve_file), "model_card": str(card_file), **deployed},
            code_paths=[str(Path(__file__).parents[1])], signature=signature(),
            input_example=example,
            metadata={"model_sha256": reg.digest, "deploy_sha256": reg.deployment.digest,
                      "deployed_formats": reg.deployment.formats,
                      "classes": list(reg.classes.names),
                      "palette": [list(c) for c in reg.classes.palette]},
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}",
                              f"pillow=={Image.__version__}", *_runtime_requirements(reg)])
    version = client.create_model_version(
        reg.name, source=info.model_uri, run_id=run_id, model_id=info.model_id,
        tags={"model_sha256": reg.digest, "deploy_sha256": reg.deployment.digest,
              "val_miou": f"{reg.miou:.6f}", "classes.sha256": classes_key(reg.classes.names),
              "classes.names": json.dumps(list(reg.classes.names))[:5000], **reg.tags},
        description=description(reg))
    return int(version.version)


def description(reg: Registration) -> str:
    """The version's description in the registry: the model card's text (without its front
    matter), or the one-line description where there is no card or it is too long for the
    store (MLflow keeps 5000 characters; the whole card is the version's `model_card`
    artifact)."""
    body = reg.card.split("\n---\n", 1)[-1].lstrip() if reg.card.startswith("---\n") else reg.card
    if not body:
        return describe(reg.classes)
    if len(body) > DESCRIPTION_LIMIT:
        note = f"\n\n(The card continues in the version's artifacts: {CARD_NAME}.)\n"
        body = body[:DESCRIPTION_LIMIT - len(note)].rsplit("\n", 1)[0] + note
    return body


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{path}: {first_line(exc)}") from None


def _read_rows(path: Path | None) -> list[dict[str, Any]]:
    """The rows of a CSV table (the per-class IoU), or none."""
    if path is None:
        return []
    import pandas as pd

    try:
        return pd.read_csv(path).to_dict("records")
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: {first_line(exc)}") from None


def _runtime_requirements(reg: Registration) -> list[str]:
    """The pins of the ONNX libraries a version with deployed files runs on."""
    from importlib.metadata import version

    if not reg.deployment.files:
        return []
    return [f"{name}=={version(name)}" for name in ("onnx", "onnxruntime", "openvino")]


def _training_lineage(info: dict[str, Any]) -> dict[str, str]:
    """Version tags linking to what produced the weights: the training run, data, commit and
    the exact params it trained with."""
    keys = {"run_id": "training.run_id", "stage": "training.stage", "data_hash": "data.hash",
            "git_commit": "git.commit", "model_iteration": "training.model_iteration",
            "val_hash": "data.val_hash"}
    tags = {tag: str(info[k]) for k, tag in keys.items() if info.get(k) is not None}
    if info.get("params") is not None:
        tags["training.params"] = json.dumps(info["params"], sort_keys=True)[:8000]
    if info.get("experiment") is not None:
        tags["training.exp"] = str(info["experiment"])
    return tags
