"""`pilog drivers`: the drivers a sensor can name, and one driver's options and sample."""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pilog.config import did_you_mean
from pilog.drivers import BUILTIN, PollingDriver, StreamingDriver, find_driver
from pilog.errors import PilogError

# Options whose integers people write in hex (I2C addresses, as in datasheets and samples).
HEX_OPTIONS = frozenset({"address"})
# `name: type = default  # doc`: an options struct documents its fields in trailing comments.
_FIELD_RE = re.compile(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$")


def names() -> list[str]:
    """Built-in driver names, then those of installed plugins."""
    return sorted(BUILTIN) + sorted(ep.name for ep in entry_points(group="pilog.drivers"))


def listing() -> list[dict[str, Any]]:
    """Every driver: name, kind and what it reads, or why it cannot be loaded."""
    out: list[dict[str, Any]] = []
    for name in names():
        try:
            cls = find_driver(name)
        except PilogError as e:
            out.append({"name": name, "kind": None, "reads": None, "error": str(e)})
            continue
        out.append({"name": name, "kind": kind(cls), "reads": cls.description, "error": None})
    return out


def kind(cls: type[PollingDriver]) -> str:
    return "streaming" if issubclass(cls, StreamingDriver) else "polling"


def describe(name: str) -> dict[str, Any]:
    """One driver: what it reads, its options (name, type, choices, default, doc) and sample."""
    known = names()
    if name not in known:
        hint = did_you_mean(name, known).replace("`", "")
        raise PilogError(
            f"unknown driver {name!r}{hint + ' ' if hint else '; '}"
            "`pilog drivers` (no name) lists them"
        )
    cls = find_driver(name)
    sample = Path(inspect.getfile(cls)).with_name("sample.toml")
    return {
        "name": name,
        "kind": kind(cls),
        "reads": cls.description,
        "options": options(cls.Options),
        "sample": sample.read_text(encoding="utf-8") if sample.is_file() else None,
    }


def options(struct: type[msgspec.Struct]) -> list[dict[str, Any]]:
    """The fields of an options struct, with the doc of each field's trailing comment."""
    docs = _field_docs(struct)
    out = []
    for f in msgspec.structs.fields(struct):
        default: Any = None
        if f.default is not msgspec.NODEFAULT:
            default = f.default
        elif f.default_factory is not msgspec.NODEFAULT:
            default = f.default_factory()
        out.append(
            {
                "name": f.encode_name,
                "type": _type_name(f.type, hex_ints=f.name in HEX_OPTIONS),
                "choices": _choices(f.type),
                "required": f.required,
                "default": msgspec.to_builtins(default, enc_hook=_plain),
                "doc": docs.get(f.name, ""),
            }
        )
    return out


def _plain(value: object) -> object:
    """A default msgspec cannot encode as it is (Size, Duration, Path) as its plain value."""
    for plain in (bool, int, float, str):
        if isinstance(value, plain):
            return plain(value)
    return str(value)


def _field_docs(struct: type[msgspec.Struct]) -> dict[str, str]:
    """Each field's trailing comment, from the struct and the structs it extends."""
    docs: dict[str, str] = {}
    for cls in reversed(struct.__mro__):
        if not (issubclass(cls, msgspec.Struct) and cls is not msgspec.Struct):
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):  # defined where no source is kept
            continue
        for line in source.splitlines()[1:]:
            m = _FIELD_RE.match(line)
            if m and m.group(2):
                docs[m.group(1)] = m.group(2).strip()
    return docs


def _type_name(tp: Any, hex_ints: bool = False) -> str:
    """A field's type as a user writes it in TOML: `"forced" | "normal"`, `list[int]`, `str`.

    Literal choices are listed as TOML values, constraints (msgspec.Meta) in words, and
    with `hex_ints` integer choices in hex, as datasheets and samples write I2C addresses.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(_toml(a, hex_ints) for a in args)
    if origin is Annotated:
        meta = [_meta_text(m) for m in args[1:] if isinstance(m, msgspec.Meta)]
        return " ".join([_type_name(args[0], hex_ints), *filter(None, meta)])
    if origin in (Union, types.UnionType):
        # TOML has no null: an optional option is one left out, which the default column shows.
        return " | ".join(_type_name(a, hex_ints) for a in args if a is not type(None))
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a, hex_ints) for a in args)}]"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _choices(tp: Any) -> list[Any] | None:
    """The values a Literal-typed option allows (for scripts), else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        allowed = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = allowed[0] if len(allowed) == 1 else tp
    return list(typing.get_args(tp)) if typing.get_origin(tp) is Literal else None


def _meta_text(meta: msgspec.Meta) -> str:
    """A msgspec.Meta's constraints in words: `matching ^[0-9a-f]{2}$`, `>= 1`."""
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [f"{sign} {getattr(meta, k)}" for k, sign in bounds.items() if getattr(meta, k)]
    if meta.pattern is not None:
        parts.append(f"matching {meta.pattern}")
    if meta.min_length is not None:
        parts.append(f"of length >= {meta.min_length}")
    if meta.max_length is not None:
        parts.append(f"of length <= {meta.max_length}")
    return f"({', '.join(parts)})" if parts else ""


def _toml(value: Any, hex_ints: bool = False) -> str:
    """`value` as TOML writes it: "text", true, 0x76 (with `hex_ints`), 3."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and hex_ints:
        return f"0x{value:02x}"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string is JSON's syntax
    return str(value)


def _default_text(option: dict[str, Any]) -> str:
    """The default as it would be written in pilog.toml, or why there is none."""
    value = option["default"]
    if option["required"]:
        return "(required)"
    if value is None:
        return "(not set)"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False) if value else ("[]" if value == [] else "{}")
    return _toml(value, hex_ints=option["name"] in HEX_OPTIONS)


def render_listing(listing: list[dict[str, Any]]) -> None:
    table = Table("driver", "kind", "reads")
    for d in listing:
        if d["error"]:
            table.add_row(d["name"], "-", f"[red]cannot load:[/] {d['error']}")
        else:
            table.add_row(d["name"], d["kind"], d["reads"])
    Console().print(table)
    print("`pilog drivers NAME` prints a driver's options and sample config")


def render(d: dict[str, Any]) -> None:
    """The options as a table, then the sample config as it is, ready to paste."""
    console = Console()
    console.print(f"[bold]{d['name']}[/bold] ({d['kind']}): {d['reads']}", highlight=False)
    if d["options"]:
        table = Table("option", "type", "default", "doc", title="options", title_justify="left")
        for o in d["options"]:
            # Escaped: `list[str]` and the docs' brackets are text, not rich markup.
            cells = (o["name"], o["type"], _default_text(o), o["doc"])
            table.add_row(*map(escape, cells), style=None)
        console.print(table, highlight=False)
    else:
        console.print("options: none", highlight=False)
    if d["sample"] is not None:
        console.print("sample config (sample.toml):", highlight=False)
        # Plain print: rich markup or wrapping would change the TOML.
        print(d["sample"], end="" if d["sample"].endswith("\n") else "\n")
