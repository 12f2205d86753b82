"""Model files, training checkpoints and exported programs: written atomically, read without
running code.

Every model file and checkpoint is read with `torch.load(weights_only=True)`: tensors and
plain data (dicts, lists, numbers, strings) only. A file holding any other pickled object,
which is how a crafted file would run code, is refused with one line naming it and nothing
in it runs. An exported program (`.pt2`) is inspected before torch reads it: only the
members `torch.export.save` writes for a plain program are accepted (no pickled payloads,
custom objects or compiled libraries), and torch's loader runs with weights-only loading
forced on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping

import torch

from .core.errors import MissingFileError, ModelFileError, UnsafeFileError
from .core.io import save_torch
from .data.classes import ClassList
from .model import DeepLabV3Plus

MODEL_CONFIG_KEYS = {"num_classes", "backbone", "output_stride", "decoder", "separable",
                     "multi_grid", "aspp_channels", "decoder_channels", "low_level_channels",
                     "dropout", "bn_momentum"}


def save_model(path: str | Path, model: DeepLabV3Plus, classes: ClassList | None = None,
               **info: Any) -> None:
    """Write `{config, state_dict, classes, info}` atomically (`info`: plain data only)."""
    classes = classes or ClassList.default(model.num_classes)
    if len(classes) != model.num_classes:
        raise ValueError(f"{path}: {len(classes)} class names for a {model.num_classes}-class model")
    state = {"config": model.config, "state_dict": model.state_dict(),
             "classes": classes.as_dict(), "info": info}
    save_torch(path, state)


def classes_of(state: Mapping[str, Any]) -> ClassList:
    """The class list a model file carries (files written before it did: VOC's, or numbers)."""
    if isinstance(state.get("classes"), dict):
        return ClassList.from_dict(state["classes"])
    return ClassList.default(int(state["config"]["num_classes"]))


def safe_load(path: str | Path, what: str = "model file") -> Any:
    """`torch.load` of tensors and plain data only; ModelFileError names a refused or broken file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in reason or "weights_only" in str(exc):
            detail = next((line.strip() for line in str(exc).splitlines()
                           if "GLOBAL" in line or "Unsupported" in line), reason)
            raise UnsafeFileError(f"{path}: refused: the {what} holds pickled objects other than "
                                 f"tensors and plain data, which could run code ({detail})") from None
        raise ModelFileError(f"{path}: not a readable {what} ({reason})") from None
    except Exception as exc:  # noqa: BLE001 - truncated zips, wrong formats: one clear line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a readable {what}, truncated or corrupt ({reason})") from None


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The `{config, state_dict, info}` of a model file, checked."""
    state = safe_load(path)
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or \
            not isinstance(state.get("state_dict"), dict):
        raise ModelFileError(f"{path}: not a DeepLabV3+ model file (no config/state_dict)")
    unknown = sorted(set(state["config"]) - MODEL_CONFIG_KEYS)
    if unknown:
        raise ModelFileError(f"{path}: unknown model settings {unknown} (written by another version?)")
    if not all(isinstance(v, torch.Tensor) for v in state["state_dict"].values()):
        raise ModelFileError(f"{path}: state_dict holds values that are not tensors")
    state.setdefault("info", {})
    if "classes" in state:
        try:
            classes = ClassList.from_dict(state["classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: unreadable class list ({exc})") from None
        if len(classes) != state["config"].get("num_classes"):
            raise ModelFileError(f"{path}: {len(classes)} class names for a "
                                 f"{state['config'].get('num_classes')}-class model")
    return state


def state_digest(state: Mapping[str, Any], strategy: Mapping[str, Any]) -> str:
    """sha256 of what a deployed model computes: the network's config, its tensors (name,
    dtype, shape, bytes) and the inference strategy. Training metadata in the file (run id,
    commit, timings) is left out: a retrain that reproduces the weights has the same digest."""
    h = hashlib.sha256(json.dumps(state["config"], sort_keys=True).encode())
    for name, tensor in sorted(state["state_dict"].items()):
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(dict(strategy), sort_keys=True).encode())
    if state.get("classes") is not None:  # files written before class lists: the same digest
        h.update(json.dumps(state["classes"], sort_keys=True).encode())
    return h.hexdigest()


def verify_digest(state: Mapping[str, Any], strategy: Mapping[str, Any], expected: str,
                  where: str) -> None:
    """ModelFileError naming `where` unless `state` + `strategy` have the digest `expected`."""
    found = state_digest(state, strategy)
    if found != expected:
        raise ModelFileError(f"{where}: its weights or strategy differ from what was registered "
                             f"(model_sha256 {expected[:12]}..., the files give {found[:12]}...): "
                             f"changed or corrupted after registration; refusing to load it")


def model_from_state(state: dict[str, Any], source: str = "model file") -> DeepLabV3Plus:
    """Rebuild the network from the contents of a model file."""
    try:
        model = DeepLabV3Plus(**state["config"])
        model.load_weights(state["state_dict"], source=source)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(str(exc) if source in str(exc) else f"{source}: {exc}") from None
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu",
               output_stride: int | None = None) -> DeepLabV3Plus:
    """Rebuild the network from a model file, in eval mode, optionally at another output stride."""
    model = model_from_state(read_model_file(path), str(path))
    if output_stride is not None:
        model.set_output_stride(output_stride)
    return model.to(device).eval()


# What `torch.export.save` writes for a plain program (below the archive's top folder).
_PROGRAM_FILES = {"archive_format", "archive_version", "byteorder", ".data/version",
                  ".data/serialization_id"}
_PROGRAM_PAYLOADS = {"data/weights/": "weight_", "data/constants/": "tensor_"}


def _program_members(archive: zipfile.ZipFile, path: Path) -> dict[str, str]:
    """{name below the top folder: full member name}; UnsafeFileError for anything a plain
    exported program does not hold (pickled payloads, custom objects, compiled code)."""
    members = {}
    for full in archive.namelist():
        parts = PurePosixPath(full).parts
        name = "/".join(parts[1:])
        payload = next((d for d in _PROGRAM_PAYLOADS if name.startswith(d)), None)
        allowed = (name in _PROGRAM_FILES
                   or (name.startswith("models/") and name.endswith(".json") and name.count("/") == 1)
                   or (name.startswith("data/sample_inputs/") and name.endswith(".pt"))
                   or (payload is not None and name.count("/") == 2 and (
                       name.endswith("_config.json")
                       or name.rsplit("/", 1)[1].startswith(_PROGRAM_PAYLOADS[payload])))
                   or (name.startswith("extra/") and name.count("/") == 1))
        if len(parts) < 2 or ".." in parts or not allowed:
            raise UnsafeFileError(f"{path}: refused: the program holds {full!r}, which a plain "
                                  f"exported program does not (pickled objects or compiled code "
                                  f"could run)")
        members[name] = full
    return members


def check_program(path: str | Path) -> None:
    """Refuse (UnsafeFileError, naming the file) an exported program whose loading could run
    code: members outside a plain program's layout, payloads stored pickled, or example
    inputs that are more than tensors and plain data."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: exported program not found")
    try:
        with zipfile.ZipFile(path) as archive:
            members = _program_members(archive, path)
            for name, full in members.items():
                if name.endswith("_config.json"):
                    config = json.loads(archive.read(full)).get("config", {})
                    for key, entry in config.items():
                        prefix = _PROGRAM_PAYLOADS[name.rsplit("/", 1)[0] + "/"]
                        if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(prefix):
                            raise UnsafeFileError(
                                f"{path}: refused: payload {key!r} is stored pickled, which "
                                f"could run code (a plain exported program stores raw tensors)")
                elif name.startswith("data/sample_inputs/"):
                    try:
                        torch.load(io.BytesIO(archive.read(full)), weights_only=True)
                    except pickle.UnpicklingError:
                        raise UnsafeFileError(f"{path}: refused: its example inputs hold pickled "
                                              f"objects other than tensors, which could run code") from None
    except (zipfile.BadZipFile, json.JSONDecodeError, AttributeError, KeyError, OSError) as exc:
        raise ModelFileError(f"{path}: not a readable exported program ({exc})") from None


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Every `torch.load` inside runs with `weights_only=True`, whatever its caller asked."""
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def load_program(path: str | Path) -> torch.nn.Module:
    """The module of an exported program (`.pt2`), checked first (`check_program`), with the
    class list it was exported with as `.classes`."""
    check_program(path)
    extra = {"classes.json": ""}
    try:
        with _weights_only_loads():
            module = torch.export.load(str(path), extra_files=extra).module()
        module.classes = ClassList.from_dict(json.loads(extra["classes.json"])) \
            if extra["classes.json"] else None
        return module
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(f"{path}: refused: it holds pickled objects other than tensors "
                              f"({str(exc).strip().splitlines()[0] if str(exc).strip() else 'unpickling'})") from None
    except (RuntimeError, ValueError, KeyError, TypeError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a readable exported program ({first})") from None
