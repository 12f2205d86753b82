"""Exported programs (`.pt2`), read without running code.

A program is inspected before torch reads it: only the members `torch.export.save` writes for
a plain program are accepted (no pickled payloads, custom objects or compiled libraries), and
torch's loader runs with weights-only loading forced on.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

import torch

from ..core.errors import MissingFileError, ModelFileError, UnsafeFileError
from ..data.classes import ClassList

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
