"""From a decoded JSON document to a payload: dotted paths, scalar checks, field selection.

Shared by `tcp_json` and `http_poll`. A `FieldSpec` is None (every top-level number, boolean
and string), a list of dotted paths (each named after its path, dots as underscores), or a
mapping of output field name to dotted path. Path segments that are digits index arrays.
"""

from __future__ import annotations

import math

from pilog.drivers.base import Payload
from pilog.events import Value

FieldSpec = dict[str, str] | list[str] | None
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # events store integers as signed 64-bit


class FieldError(ValueError):
    """A document that does not give the configured fields; the message is the reject reason."""


def field_map(spec: FieldSpec) -> dict[str, str] | None:
    """The output-name to path mapping a spec stands for (None: all top-level scalars)."""
    if spec is None or isinstance(spec, dict):
        return spec
    return {path.replace(".", "_"): path for path in spec}


def extract(doc: object, fields: dict[str, str] | None) -> Payload:
    """The payload `fields` selects from `doc`; FieldError if it cannot."""
    if not isinstance(doc, dict):
        raise FieldError(f"not a JSON object but {_kind(doc)}")
    if fields is None:
        out = {k: v for k, v in doc.items() if _is_scalar(v)}
        if not out:
            raise FieldError("no number, boolean or string at the top level")
        return {k: scalar(v, k) for k, v in out.items()}
    return {name: scalar(lookup(doc, path), path) for name, path in fields.items()}


def lookup(doc: object, path: str) -> object:
    """The value at dotted `path` in `doc`; FieldError naming the path if there is none."""
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise FieldError(f"no '{path}' in the document")
    return node


def scalar(value: object, path: str) -> Value:
    """`value` as a reading value: a finite number in range, a boolean or a string."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise FieldError(f"'{path}' is out of the 64-bit integer range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FieldError(f"'{path}' is not finite")
        return value
    raise FieldError(f"'{path}' is {_kind(value)}, not a number, boolean or string")


def _is_scalar(value: object) -> bool:
    return isinstance(value, bool | int | float | str)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
