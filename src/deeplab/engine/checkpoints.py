"""Resumable training checkpoints: settings fingerprint, RNG states, safe loading.

A checkpoint holds model, optimizer, scheduler, grad scaler, RNG states, the iteration,
the loss/validation history and the MLflow run id, as tensors and plain data only (read back
with `weights_only=True`). It is resumed only if written with the same fingerprint: the same
settings and data, and the same code (`code_signature`), so that a stage DVC reruns because
its code changed trains anew instead of picking up the finished checkpoint of the old code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ModelFileError, UnsafeFileError
from ..core.io import remove_stale_temps
from ..model.files import safe_load

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 2  # bumped when the checkpoint layout changes: older ones are not resumed


def fingerprint(settings: dict[str, Any]) -> str:
    """Stable hash of the settings a checkpoint must match to be resumed."""
    blob = json.dumps({"format": CHECKPOINT_FORMAT, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def code_signature(package: str = "deeplab") -> str:
    """sha256 over the source of every module of `package` this process has loaded."""
    h = hashlib.sha256()
    for name in sorted(sys.modules):
        if name == package or name.startswith(package + "."):
            file = getattr(sys.modules[name], "__file__", None)
            if file and file.endswith(".py"):
                h.update(name.encode() + b"\0" + Path(file).read_bytes())
    return h.hexdigest()[:16]


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain data."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {"python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss": gauss},
             "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "pos": int(np_state["state"]["pos"]),
                       "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss"]))
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np_state["key"].numpy().astype(np.uint32),
                                   "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path, key: str, total: int) -> dict[str, Any] | None:
    """The resumable state in `path` if it was written with fingerprint `key`, else None.

    Temporary files a killed run left beside it are removed. A truncated or corrupt
    checkpoint is reported and ignored (training starts over and overwrites it); one holding
    pickled code is refused.
    """
    remove_stale_temps(path)
    if not path.is_file():
        return None
    try:
        state = safe_load(path, "training checkpoint")
    except UnsafeFileError as exc:
        raise UnsafeFileError(f"{exc}; delete it to train from scratch") from None
    except ModelFileError as exc:
        log.warning("%s; starting from iteration 0 (it will be overwritten)", exc)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != key or \
            not 0 <= state.get("iteration", -1) <= total:
        log.info("%s was written with other settings; starting from iteration 0", path)
        return None
    return state
