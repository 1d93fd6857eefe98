"""From JSON bytes to a payload: liberal decoding, paths, scalar checks, field selection.

Shared by `mqtt`, `tcp_json` and `http_poll`. A path is keys joined by dots; a key that holds a
dot is double-quoted (`SDS0X1."PM2.5"`, as in TOML's dotted keys and jq); an unquoted all-digit
key also indexes an array. A `FieldSpec` is None, a list of paths (each named after its path by
`field_names.field_name`: `SDS0X1."PM2.5"` → `sds0x1_pm2_5`), or a table of field name to path.
`fields` must all be in a document; `optional_fields` are taken when there (a null is absent).
With neither, every top-level number, boolean and string is taken, named by `field_name`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

import msgspec

from pilog.drivers.base import Payload
from pilog.drivers.field_names import check_field_name, device_field_name, field_name
from pilog.events import Value

FieldSpec = dict[str, str] | list[str] | None
Path = tuple[str | int, ...]  # an int is an unquoted all-digit key: an object key or an index
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # events store integers as signed 64-bit
QUOTE_HINT = """quote a key holding a dot: 'SDS0X1."PM2.5"'"""
# A JSON string (skipped as is), or a bare nan/inf outside strings: old Tasmota firmware prints
# a failed sensor read as `"Temperature":nan` (arendst/Tasmota#4147), Arduino printf as `inf`.
_NON_FINITE = re.compile(rb'"(?:[^"\\]|\\.)*"|(-)?\b(?:nan|inf(?:inity)?)\b', re.IGNORECASE)


class FieldError(ValueError):
    """A document that does not give the configured fields; the message is the reject reason."""


def decode_json(data: bytes | bytearray | memoryview) -> object:
    """`data` as JSON, also taking bare `nan`, `inf` and `-inf` (as float NaN and infinities)."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        raw = bytes(data)
        if all(m.group(0).startswith(b'"') for m in _NON_FINITE.finditer(raw)):
            raise
    # Rare path: rewrite bare words to what Python's json module takes, and parse there.
    try:
        return json.loads(_NON_FINITE.sub(_standard_constant, raw))
    except (ValueError, RecursionError) as e:
        raise msgspec.DecodeError(str(e)) from None


def _standard_constant(match: re.Match[bytes]) -> bytes:
    word = match.group(0)
    if word.startswith(b'"'):
        return word
    if word.lstrip(b"-").lower().startswith(b"nan"):
        return b"NaN"
    return b"-Infinity" if match.group(1) else b"Infinity"


def parse_path(path: str) -> Path:
    """The keys of `path`; ValueError naming the path if it is malformed."""
    keys: list[str | int] = []
    i = 0
    while True:
        if path.startswith('"', i):
            end = path.find('"', i + 1)
            if end < 0:
                raise ValueError(f"path {path!r}: a quote is not closed")
            keys.append(path[i + 1 : end])
            i = end + 1
            if i < len(path) and path[i] != ".":
                raise ValueError(f"path {path!r}: a dot must follow the closing quote")
        else:
            end = path.find(".", i)
            end = len(path) if end < 0 else end
            key = path[i:end]
            if not key or '"' in key:
                raise ValueError(f"path {path!r} has an empty or half-quoted key: {QUOTE_HINT}")
            keys.append(int(key) if key.isascii() and key.isdigit() else key)
            i = end
        if i >= len(path):
            return tuple(keys)
        i += 1  # the dot
        if i >= len(path):
            raise ValueError(f"path {path!r} ends with a dot: {QUOTE_HINT}")


class FieldSelector:
    """What `fields` and `optional_fields` select from a document; built once per driver."""

    def __init__(self, fields: FieldSpec, optional_fields: FieldSpec = None) -> None:
        self.every_scalar = fields is None and optional_fields is None
        self.required = _paths(fields, "fields")
        self.optional = _paths(optional_fields, "optional_fields")
        if both := self.required.keys() & self.optional.keys():
            raise ValueError(f"fields and optional_fields both name {', '.join(sorted(both))}")

    def extract(self, doc: object, drop: Callable[[str], None]) -> Payload:
        """The payload selected from `doc`; FieldError if it gives none.

        A NaN or infinity is left out and its reason passed to `drop`; the rest is kept.
        """
        if not isinstance(doc, dict):
            raise FieldError(f"not a JSON object but {_kind(doc)}")
        if self.every_scalar:
            return _every_scalar(doc, drop)
        out: dict[str, Value] = {}
        for optional, paths in ((False, self.required), (True, self.optional)):
            for name, (text, path) in paths.items():
                value = lookup(doc, path, text, optional)
                if value is None and optional:
                    continue
                if isinstance(value, float) and not math.isfinite(value):
                    drop(f"'{text}' is not a finite number: that value is left out")
                    continue
                out[name] = scalar(value, text)
        if not out:
            raise FieldError(
                "none of the fields is in the document"
                if not self.required
                else "no finite value among the fields"
            )
        return out


def _paths(spec: FieldSpec, key: str) -> dict[str, tuple[str, Path]]:
    """Field name → (path as written, parsed path) for one of `fields`, `optional_fields`."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        for name in spec:
            check_field_name(name, key)
        return {name: (text, parse_path(text)) for name, text in spec.items()}
    out: dict[str, tuple[str, Path]] = {}
    for text in spec:
        path = parse_path(text)
        name = field_name("_".join(str(k) for k in path))
        if not name or name in out:
            raise ValueError(
                f"{key}: path {text!r} makes no field name, or one another path makes: "
                "use a table of field name to path"
            )
        out[name] = (text, path)
    return out


def _every_scalar(doc: dict[str, object], drop: Callable[[str], None]) -> Payload:
    out: dict[str, Value] = {}
    for key, value in doc.items():
        if not isinstance(value, bool | int | float | str):
            continue  # nested objects, arrays and nulls
        name = device_field_name(key, out, drop)
        if name is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            drop(f"'{key}' is not a finite number: that value is left out")
        else:
            out[name] = scalar(value, key)
    if not out:
        raise FieldError("no number, boolean or string at the top level")
    return out


def lookup(doc: object, path: Path, text: str, optional: bool = False) -> object:
    """The value at `path` in `doc` (None if absent and `optional`); FieldError naming `text`."""
    node = doc
    for key in path:
        if isinstance(node, dict) and str(key) in node:
            node = node[str(key)]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        elif optional:
            return None
        else:
            raise FieldError(f"no '{text}' in the document")
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


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
