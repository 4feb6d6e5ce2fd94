"""Structural validation of plain JSON data against a msgspec type, collecting *every* problem.

msgspec stops at the first error and silently ignores unknown fields; a config check must
list all errors with their JSON path and report unknown keys as warnings. So we walk the
type tree from ``msgspec.inspect`` ourselves; once the data is clean, ``msgspec.convert``
builds the typed object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec.inspect as mi


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


_JSON_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def json_type_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def describe(t: mi.Type) -> str:
    if isinstance(t, mi.StructType | mi.DictType):
        return "object"
    if isinstance(t, mi.ListType):
        return "array"
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.IntType):
        return "integer"
    if isinstance(t, mi.FloatType):
        return "number"
    if isinstance(t, mi.NoneType):
        return "null"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(repr(v) for v in t.values)
    if isinstance(t, mi.UnionType):
        return " or ".join(describe(x) for x in t.types)
    return "any value"


def check(value: Any, t: mi.Type, path: str, out: list[Problem]) -> None:
    """Append every problem of ``value`` against type ``t`` to ``out``."""
    if isinstance(t, mi.AnyType):
        return
    if isinstance(t, mi.Metadata):
        check(value, t.type, path, out)
        return
    if isinstance(t, mi.UnionType):
        _check_union(value, t, path, out)
        return
    if isinstance(t, mi.StructType):
        _check_struct(value, t, path, out)
        return
    if isinstance(t, mi.DictType):
        if not isinstance(value, dict):
            out.append(Problem(path, f"expected object, got {json_type_name(value)}"))
            return
        for k, v in value.items():
            check(v, t.value_type, child(path, str(k)), out)
        return
    if isinstance(t, mi.ListType):
        if not isinstance(value, list):
            out.append(Problem(path, f"expected array, got {json_type_name(value)}"))
            return
        for i, v in enumerate(value):
            check(v, t.item_type, child(path, i), out)
        return
    if isinstance(t, mi.LiteralType):
        if not any(type(value) is type(v) and value == v for v in t.values):
            out.append(Problem(path, f"expected {describe(t)}, got {value!r}"))
        return
    _check_scalar(value, t, path, out)


def _check_scalar(value: Any, t: mi.Type, path: str, out: list[Problem]) -> None:
    if isinstance(t, mi.StrType):
        ok = isinstance(value, str)
    elif isinstance(t, mi.BoolType):
        ok = isinstance(value, bool)
    elif isinstance(t, mi.IntType):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(t, mi.FloatType):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(t, mi.NoneType):
        ok = value is None
    else:  # pragma: no cover - a schema type we do not use
        return
    if not ok:
        out.append(Problem(path, f"expected {describe(t)}, got {json_type_name(value)}"))
        return
    if isinstance(t, mi.IntType | mi.FloatType):
        if t.ge is not None and value < t.ge:
            out.append(Problem(path, f"must be >= {t.ge}, got {value}"))
        if t.le is not None and value > t.le:
            out.append(Problem(path, f"must be <= {t.le}, got {value}"))
        if t.gt is not None and value <= t.gt:
            out.append(Problem(path, f"must be > {t.gt}, got {value}"))


def _shape_matches(value: Any, t: mi.Type) -> bool:
    """Whether ``value`` has the JSON shape of ``t`` (without looking inside)."""
    if isinstance(t, mi.Metadata):
        return _shape_matches(value, t.type)
    if isinstance(t, mi.AnyType):
        return True
    if isinstance(t, mi.StructType | mi.DictType):
        return isinstance(value, dict)
    if isinstance(t, mi.ListType):
        return isinstance(value, list)
    if isinstance(t, mi.LiteralType):
        return any(type(value) is type(v) for v in t.values)
    trial: list[Problem] = []
    _check_scalar(value, t, "", trial)
    return not any(p.message.startswith("expected") for p in trial)


def _check_union(value: Any, t: mi.UnionType, path: str, out: list[Problem]) -> None:
    candidates = [option for option in t.types if _shape_matches(value, option)]
    if not candidates:
        out.append(Problem(path, f"expected {describe(t)}, got {json_type_name(value)}"))
        return
    first: list[Problem] | None = None
    for option in candidates:
        trial: list[Problem] = []
        check(value, option, path, trial)
        if not any(p.severity == "error" for p in trial):
            out.extend(trial)
            return
        if first is None:
            first = trial
    out.extend(first or ())


def _check_struct(value: Any, t: mi.StructType, path: str, out: list[Problem]) -> None:
    if not isinstance(value, dict):
        out.append(Problem(path, f"expected object, got {json_type_name(value)}"))
        return
    fields = {f.encode_name: f for f in t.fields}
    for key, v in value.items():
        field = fields.get(key)
        if field is None:
            out.append(Problem(child(path, str(key)), "unknown key (ignored)", "warning"))
            continue
        check(v, field.type, child(path, key), out)
    for name, field in fields.items():
        if field.required and name not in value:
            out.append(Problem(child(path, name), "required field is missing"))
