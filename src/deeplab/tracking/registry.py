"""Registered and logged MLflow models: their weights-only model file and strategy JSON,
verified against the sha256 recorded at registration before anything uses them.

A logged model folder holds `MLmodel` (whose metadata carries `model_sha256`), the model file
and `strategy.json`; a registry version carries the same digest as its `model_sha256` tag.
Loading checks the strategy against the `register.inference` schema and the weights and
strategy against every digest there is, and refuses a model with none.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..core.choices.runtimes import check_format
from ..core.errors import ConfigError, ModelFileError, first_line
from ..core.hashing import file_sha256, value_sha256
from ..model.files import read_model_file, verify_digest
from ..model.inference import InferenceStrategy


def _strategy_file(path: Path, where: str) -> dict[str, Any]:
    """A logged model's strategy JSON, validated like `register.inference` (+ `pad_to`)."""
    from ..core.schema import StoredStrategy
    from ..core.validation import validate_options

    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{where}: its strategy.json is not readable JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ModelFileError(f"{where}: its strategy.json must be a mapping of output_stride, "
                             f"scales, flip, pad_to; got {type(raw).__name__}")
    try:
        validate_options(StoredStrategy, raw, option_prefix="")
    except ConfigError as exc:
        raise ModelFileError(f"{where}: its strategy.json is invalid: "
                             + "; ".join(str(exc).splitlines())) from None
    return raw


def logged_model_dir(path: Path) -> Path:
    """The logged model folder (holding `MLmodel`) that `path` (an artifact) lies in."""
    for parent in (path, *path.parents):
        if (parent / "MLmodel").is_file():
            return parent
    raise ModelFileError(f"{path}: not inside a logged MLflow model (no MLmodel file)")


def read_logged_model(model_dir: Path, where: str, expected: Sequence[str] = ()
                      ) -> tuple[dict[str, Any], InferenceStrategy]:
    """The checked model-file contents and strategy of a logged model folder.

    The weights and strategy must give the `model_sha256` recorded at registration: in the
    model's own metadata and in each of `expected` (the registry version's tag). A model with
    no digest to check against is refused.
    """
    from mlflow.models import Model

    try:
        logged = Model.load(str(model_dir))
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds
        raise ModelFileError(f"{where}: cannot read the logged model ({first_line(exc)})") from None
    artifacts = logged.flavors.get("python_function", {}).get("artifacts", {})
    if "model_file" not in artifacts or "strategy" not in artifacts:
        raise ModelFileError(f"{where}: not a model registered by this version of the pipeline "
                             f"(no weights-only model file; older versions were pickled and are "
                             f"not loaded); register it again")
    strategy = _strategy_file(model_dir / artifacts["strategy"]["path"], where)
    state = read_model_file(model_dir / artifacts["model_file"]["path"])
    digests = [d for d in ((logged.metadata or {}).get("model_sha256"), *expected) if d]
    if not digests:
        raise ModelFileError(f"{where}: no model_sha256 to verify its weights against "
                             f"(registered by an older version); register it again")
    for digest in dict.fromkeys(digests):
        verify_digest(state, strategy, digest, where)
    return state, InferenceStrategy.from_dict(strategy)


def read_serving(model_dir: Path, where: str) -> tuple[dict[str, Any], dict[str, Path]]:
    """The serving settings (`serve.json`, validated like `register.serve`) and deployed files
    of a logged model folder, checked against the `deploy_sha256` and file digests recorded at
    registration; with the `temperature` its probabilities are served under, when evaluate fitted
one. A model registered before deployments serves on torch fp32."""

    from mlflow.models import Model

    from ..core.schema import ServeConfig
    from ..core.validation import validate_options

    logged = Model.load(str(model_dir))
    artifacts = logged.flavors.get("python_function", {}).get("artifacts", {})
    if "serve" not in artifacts:
        return ServeConfig().model_dump(), {}
    try:
        settings = json.loads((model_dir / artifacts["serve"]["path"]).read_text())
        digests = dict(settings.pop("files"))
        temperature = settings.pop("temperature", None)
        auto = settings.pop("auto", None)
        validate_options(ServeConfig, settings, option_prefix="")
        if auto is not None:  # register.serve auto: the formats to fall back along
            for fmt in auto["order"]:
                check_format(*fmt.split("/"))
            settings["auto"] = auto
        if temperature is not None:
            if not isinstance(temperature, (int, float)) or not 0.01 <= temperature <= 100:
                raise ValueError(f"temperature {temperature!r} is not a number in [0.01, 100]")
            settings["temperature"] = float(temperature)
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        raise ModelFileError(f"{where}: its serve.json is invalid ({first_line(exc)})") from None
    expected = (logged.metadata or {}).get("deploy_sha256")
    found = value_sha256({**settings, "files": digests})
    if found != expected:
        raise ModelFileError(f"{where}: its serving settings differ from what was registered "
                             f"(deploy_sha256); refusing to load it")
    files = {}
    for name, digest in digests.items():
        path = model_dir / artifacts.get(name.replace(".", "_"), {}).get("path", "missing")
        if file_sha256(path) != digest:
            raise ModelFileError(f"{where}: its deployed {name} differs from what was "
                                 f"registered (sha256); refusing to load it")
        files[name] = path
    return settings, files


def _registered_digests(uri: str) -> list[str]:
    """The `model_sha256` tag of the registry version a `models:/name@alias` or
    `models:/name/<version>` URI names (none for other URIs)."""
    from mlflow import MlflowClient

    rest = uri.removeprefix("models:/")
    if rest == uri:
        return []
    client = MlflowClient()
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif rest.count("/") == 1 and rest.split("/")[1].isdigit():
        version = client.get_model_version(*rest.split("/"))
    else:
        return []
    digest = version.tags.get("model_sha256")
    if not digest:
        raise ModelFileError(f"{uri}: version {version.version} has no model_sha256 tag to "
                             f"verify its weights against; register it again")
    return [digest]


def load_registered(uri: str) -> tuple[dict[str, Any], InferenceStrategy]:
    """The verified model-file contents and strategy of a registered (or logged) model URI."""
    state, strategy, _ = open_registered(uri)
    return state, strategy


@contextlib.contextmanager
def registered_files(uri: str) -> Iterator[tuple[dict[str, Any], InferenceStrategy,
                                                 dict[str, Any], dict[str, Path]]]:
    """The verified model-file contents, strategy, serving settings and deployed files of a
    registered (or logged) model URI, downloaded to a folder that lasts as long as the
    context."""
    import mlflow

    from .store import relocate_store, tracking_uri

    relocate_store(tracking_uri())
    mlflow.set_tracking_uri(tracking_uri())
    with tempfile.TemporaryDirectory() as tmp:
        try:
            expected = _registered_digests(uri)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except ModelFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds
            raise ModelFileError(f"{uri}: cannot load the model ({first_line(exc)})") from None
        state, strategy = read_logged_model(local, uri, expected)
        settings, files = read_serving(local, uri)
        yield state, strategy, settings, files


def open_registered(uri: str) -> tuple[dict[str, Any], InferenceStrategy, float]:
    """`load_registered`, and the calibration temperature registered with the version (1.0
    for a version registered without one)."""
    with registered_files(uri) as (state, strategy, settings, _):
        return state, strategy, float(settings.get("temperature", 1.0))
