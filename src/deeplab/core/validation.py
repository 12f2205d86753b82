"""Validation messages: every fault one line, with its key path, pydantic's own wording (ours
for the checks the schema defines), the value given, and "did you mean" for unknown keys."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .errors import ConfigError

SectionT = TypeVar("SectionT", bound=BaseModel)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "params"


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _unwrap(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) is Union:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _keys_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a mapping at `loc` (below `root`) may hold (for "did you mean")."""
    tp: Any = root
    parts = list(loc)
    while True:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {field.alias or name: field for name, field in tp.model_fields.items()}
            if not parts:
                return list(fields)
            tp = fields[parts.pop(0)].annotation
        elif get_origin(tp) in (dict, list) and parts:
            parts.pop(0)
            tp = get_args(tp)[-1]
        else:
            return []


# Errors this module raises itself (PydanticCustomError); the rest keep pydantic's wording.
WHOLE_SECTION_KINDS = {"alias", "coco", "variant"}  # about a mapping: its value is not shown


def _message(root: type[BaseModel], err: dict[str, Any]) -> str:
    """One line for one pydantic error: the key path, pydantic's own message (ours for the
    checks defined here), and the value given. Unknown keys get a "did you mean"."""
    loc, kind = tuple(err["loc"]), err["type"]
    path = _path(loc)
    if kind == "missing":
        return f"{path}: missing key"
    if kind == "extra_forbidden":
        allowed = _keys_at(root, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        return (f"{path}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; allowed here: {', '.join(allowed)}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):  # pydantic names our classes
        return f"{path}: expected a mapping of keys, got {_show(err['input'])}"
    if kind in WHOLE_SECTION_KINDS or (loc and loc[-1] == "[key]"):
        return f"{path}: {err['msg']}"
    return f"{path}: {err['msg']}, got {_show(err['input'])}"

def validate_options(model: type[SectionT], options: dict[str, Any], option_prefix: str = "--"
                     ) -> SectionT:
    """`model` built from command-line options (None = not given); ConfigError names each bad
    option as `--name` (or with `option_prefix`), with the schema's own rules and bounds."""
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            line = _message(model, err)
            key = str(err["loc"][0]) if err["loc"] else ""
            if key and option_prefix:
                line = option_prefix + key.replace("_", "-") + line[len(key):]
            lines.append(line)
        raise ConfigError("\n".join(lines)) from None


def validate(model: type[SectionT], data: dict[str, Any]) -> SectionT:
    """`model` built from `data`; ConfigError lists every fault, one line each, with its path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_message(model, e) for e in exc.errors())) from None

