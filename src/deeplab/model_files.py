"""Model files and resumable training checkpoints: written atomically, read without pickle.

Every file is read with `torch.load(weights_only=True)`: tensors and plain data (dicts, lists,
numbers, strings) only. A file holding any other pickled object, which is how a crafted
file would run code, is refused with one line naming it and nothing in it runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import MissingFileError, ModelFileError, UnsafeFileError
from .io import atomic_path
from .model import DeepLabV3Plus

MODEL_CONFIG_KEYS = {"num_classes", "backbone", "output_stride", "decoder", "separable",
                     "multi_grid", "aspp_channels", "decoder_channels", "low_level_channels",
                     "dropout", "bn_momentum"}


def save_model(path: str | Path, model: DeepLabV3Plus, **info: Any) -> None:
    """Write `{config, state_dict, info}` atomically (`info`: plain data only)."""
    state = {"config": model.config, "state_dict": model.state_dict(), "info": info}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
    return state


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
