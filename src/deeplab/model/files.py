"""Model files and training checkpoints: written atomically, read without running code.

Every model file and checkpoint is read with `torch.load(weights_only=True)`: tensors and
plain data (dicts, lists, numbers, strings) only. A file holding any other pickled object,
which is how a crafted file would run code, is refused with one line naming it and nothing
in it runs. (Exported programs are serving's: `deeplab.serving.programs`.)
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.errors import MissingFileError, ModelFileError, UnsafeFileError
from ..core.io import save_torch
from ..data.classes import ClassList
from .deeplab import DeepLabV3Plus

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
