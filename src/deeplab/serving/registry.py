"""Registering the finetuned model in the MLflow Model Registry with aliases.

The registered model is an MLflow pyfunc "from code" (`pyfunc_model.py`): uint8 RGB images
`N x H x W x 3` in, uint8 label maps out. Its weights travel as the model file (read with
`weights_only=True`), its inference strategy as JSON, and the `deeplab` package as
`code_paths`; nothing is pickled. The new version gets alias `champion` when its validation
mIoU beats the current champion's (or there is none), else `challenger`.

One model (sha256 of the network config, its tensors and the strategy) is one version,
whatever happens: the version is
created with its `model_sha256` tag in one call, concurrent registrations of the same model
are collapsed to the lowest version, a rerun after a crash finds that version and gives it
its alias, and on a local SQLite store registrations take turns under a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..config import Params
from ..errors import RegistryError, no_space_cause
from ..evaluation.inference import InferenceStrategy
from ..data.classes import ClassList
from ..model_files import classes_of, read_model_file, state_digest

log = logging.getLogger(__name__)
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def model_digest(path: Path, strategy: dict[str, Any]) -> str:
    """`state_digest` of a model file."""
    return state_digest(read_model_file(path), strategy)


def signature():
    """uint8 RGB images `N x H x W x 3` of any size -> uint8 label maps `N x H x W`."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
                          outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]))


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
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    try:
        f = open(lock, "a+")
    except OSError:  # a read-only store: the registration itself reports it
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _store_errors():
    """The exception types by which a tracking store says no (or cannot be reached)."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return (MlflowException, sqlalchemy.exc.SQLAlchemyError, requests.exceptions.RequestException,
            OSError)


def _first_line(exc: BaseException) -> str:
    """The cause to print: a full disk wherever it hides in the chain, else the first line."""
    cause = no_space_cause(exc)
    if cause:
        return cause
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _assign_alias(client, name: str, version: int, miou: float) -> list[str]:
    """`champion` if this version beats the champion (or there is none), else `challenger`;
    a version that already has an alias keeps it."""
    from mlflow.exceptions import MlflowException

    current = list(client.get_model_version(name, str(version)).aliases)
    if current:
        return current
    try:
        champion = client.get_model_version_by_alias(name, "champion")
        best = float(champion.tags.get("val_miou", "-inf"))
    except MlflowException:
        champion, best = None, float("-inf")
    alias = "champion" if miou > best else "challenger"
    client.set_registered_model_alias(name, alias, str(version))
    log.info("%s version %d is @%s (val mIoU %.4f; champion had %s)", name, version, alias, miou,
             "none" if champion is None else f"{best:.4f}")
    return [alias]


def _versions_with_digest(client, name: str, digest: str) -> list[int]:
    found = client.search_model_versions(f"name='{name}' and tag.model_sha256='{digest}'")
    return sorted(int(v.version) for v in found)


def describe(classes: ClassList) -> str:
    """The registry description: what goes in and out, and the classes by name."""
    names = ", ".join(f"{k} {n}" for k, n in enumerate(classes.names))
    if len(names) > 3000:
        names = names[:3000] + ", ..."
    return (f"DeepLabV3+ semantic segmentation, {len(classes)} classes: uint8 RGB N x H x W x 3 "
            f"in, uint8 label maps N x H x W out (class ids; 0..{len(classes) - 1}). "
            f"Classes: {names}")


def _log_and_create_version(client, name: str, model_file: Path, strategy: dict[str, Any],
                            digest: str, lineage: dict[str, str], miou: float, run_id: str,
                            description: str, classes: ClassList) -> int:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        strategy_file = Path(tmp) / "strategy.json"
        strategy_file.write_text(json.dumps(strategy, indent=2))
        example = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE),
            artifacts={"model_file": str(model_file), "strategy": str(strategy_file)},
            code_paths=[str(Path(__file__).parents[1])], signature=signature(),
            input_example=example,
            metadata={"model_sha256": digest, "classes": list(classes.names),
                      "palette": [list(c) for c in classes.palette]},
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"])
    version = client.create_model_version(
        name, source=info.model_uri, run_id=run_id, model_id=info.model_id,
        tags={"model_sha256": digest, "val_miou": f"{miou:.6f}", **lineage},
        description=description)
    return int(version.version)


def _training_lineage(info: dict[str, Any]) -> dict[str, str]:
    """Version tags linking to what produced the weights: the training run, data, commit."""
    keys = {"run_id": "training.run_id", "stage": "training.stage", "data_hash": "data.hash",
            "git_commit": "git.commit"}
    return {tag: str(info[k]) for k, tag in keys.items() if info.get(k) is not None}


def register(model_file: Path, metrics_file: Path, params: Params) -> dict[str, Any]:
    """Log and register `model_file`; return what happened (version, alias, whether new)."""
    from ..tracking import start_stage_run, tracking_uri

    name, min_miou = params.register.model_name, params.register.min_miou
    miou = read_miou(metrics_file)
    strategy = InferenceStrategy.from_dict(params.register.inference.model_dump()).as_dict()
    state = read_model_file(model_file)
    digest, lineage = state_digest(state, strategy), _training_lineage(state["info"])
    classes = classes_of(state)
    description = describe(classes)
    uri = tracking_uri()
    try:
        with store_lock(uri), start_stage_run("register", params, params.mlflow.experiment) as run:
            return _register_locked(run.info.run_id, model_file, name, strategy, digest, lineage,
                                    miou, min_miou, description, classes)
    except _store_errors() as exc:
        raise RegistryError(f"tracking store {uri}: {_first_line(exc)}") from None


def _register_locked(run_id: str, model_file: Path, name: str, strategy: dict[str, Any],
                     digest: str, lineage: dict[str, str], miou: float, min_miou: float,
                     description: str, classes: ClassList) -> dict[str, Any]:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        with contextlib.suppress(MlflowException):  # another process may create it first
            client.create_registered_model(
                name, description="DeepLabV3+ semantic segmentation: uint8 RGB N x H x W x 3 in, "
                                  "uint8 label maps N x H x W out; each version's description "
                                  "names its classes")
    existing = _versions_with_digest(client, name, digest)
    new = not existing
    if new:
        if miou < min_miou:
            raise RegistryError(f"validation mIoU {miou:.4f} is below register.min_miou "
                                f"{min_miou}; not registering")
        mlflow.log_metrics({"val_miou": miou})
        mlflow.log_params({f"inference.{k}": v for k, v in strategy.items()})
        mine = _log_and_create_version(client, name, model_file, strategy, digest, lineage, miou,
                                       run_id, description, classes)
        existing = _versions_with_digest(client, name, digest)
        if existing and existing[0] != mine:  # a concurrent registration was first
            client.delete_model_version(name, str(mine))
            new = False
    version = existing[0]
    if not new:
        log.info("model unchanged (sha256 %s...): already version %d", digest[:12], version)
    aliases = _assign_alias(client, name, version, miou)
    return {"name": name, "version": version, "new": new, "aliases": aliases, "miou": miou}
