"""`pilog drivers`: the drivers a sensor can name, and one driver's options and sample."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from pilog.config import did_you_mean
from pilog.drivers import BUILTIN, PollingDriver, StreamingDriver, find_driver
from pilog.errors import PilogError

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
    """One driver: what it reads, its options (name, type, default, doc) and its sample config."""
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
                "type": _type_name(f.type),
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


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) if isinstance(tp, type) else None
    return text or str(tp).replace("typing.", "")


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
            default = "(required)" if o["required"] else repr(o["default"])
            table.add_row(o["name"], o["type"], default, o["doc"], style=None)
        console.print(table, highlight=False)
    else:
        console.print("options: none", highlight=False)
    if d["sample"] is not None:
        console.print("sample config (sample.toml):", highlight=False)
        # Plain print: rich markup or wrapping would change the TOML.
        print(d["sample"], end="" if d["sample"].endswith("\n") else "\n")
