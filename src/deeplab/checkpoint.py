"""Model files: the weights plus everything needed to rebuild the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .io import atomic_path
from .model import DeepLabV3Plus


def save_model(path: str | Path, model: DeepLabV3Plus, **info: Any) -> None:
    """Write `{config, state_dict, info}` atomically."""
    state = {"config": model.config, "state_dict": model.state_dict(), "info": info}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_model_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable model file ({exc})") from exc
    if not isinstance(state, dict) or "config" not in state or "state_dict" not in state:
        raise ValueError(f"{path}: not a DeepLabV3+ model file (no config/state_dict)")
    return state


def model_from_state(state: dict[str, Any], source: str = "model file") -> DeepLabV3Plus:
    """Rebuild the network from the contents of a model file."""
    model = DeepLabV3Plus(**state["config"])
    model.load_weights(state["state_dict"], source=source)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu",
               output_stride: int | None = None) -> DeepLabV3Plus:
    """Rebuild the network from a model file, in eval mode, optionally at another output stride."""
    model = model_from_state(read_model_file(path), str(path))
    if output_stride is not None:
        model.set_output_stride(output_stride)
    return model.to(device).eval()
