"""`pilog sinks` and `pilog projections`: the types a table can name, and one type's options
and sample, as `pilog drivers` does for drivers."""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pilog.cli.drivers import options
from pilog.config import did_you_mean
from pilog.errors import PilogError
from pilog.plugins import PluginKind, find_plugin, options_of


def names(kind: PluginKind) -> list[str]:
    """Built-in type names, then those of installed plugins."""
    return sorted(kind.builtin) + sorted(ep.name for ep in entry_points(group=kind.group))


def description(cls: object) -> str:
    """The first line of the class's docstring."""
    doc = inspect.getdoc(cls) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def listing(kind: PluginKind) -> list[dict[str, Any]]:
    """Every type: name, what it does and its extra, or why it cannot be loaded."""
    out: list[dict[str, Any]] = []
    for name in names(kind):
        try:
            cls = find_plugin(kind, name)
        except PilogError as e:
            out.append({"name": name, "does": None, "extra": None, "error": str(e)})
            continue
        extra = getattr(cls, "extra", None)
        out.append({"name": name, "does": description(cls), "extra": extra, "error": None})
    return out


def describe(kind: PluginKind, name: str) -> dict[str, Any]:
    """One type: what it does, its extra, its options and its sample config."""
    known = names(kind)
    if name not in known:
        hint = did_you_mean(name, known).replace("`", "")
        raise PilogError(
            f"unknown {kind.word} {name!r}{hint + ' ' if hint else '; '}"
            f"`{kind.lister}` (no name) lists them"
        )
    cls = find_plugin(kind, name)
    sample = Path(inspect.getfile(cls)).with_name("sample.toml")  # type: ignore[arg-type]
    return {
        "name": name,
        "does": description(cls),
        "extra": getattr(cls, "extra", None),
        "options": options(options_of(cls)),
        "sample": sample.read_text(encoding="utf-8") if sample.is_file() else None,
    }


def render_listing(kind: PluginKind, listing: list[dict[str, Any]]) -> None:
    table = Table(kind.word, "extra", "does")
    for d in listing:
        if d["error"]:
            table.add_row(d["name"], "-", f"[red]cannot load:[/] {d['error']}")
        else:
            table.add_row(d["name"], d["extra"] or "-", d["does"])
    Console().print(table)
    print(f"`{kind.lister} NAME` prints a {kind.word}'s options and sample config")


def render(kind: PluginKind, d: dict[str, Any]) -> None:
    """The options as a table, then the sample config as it is, ready to paste."""
    console = Console()
    extra = f" (pip extra: {d['extra']})" if d["extra"] else ""
    console.print(f"[bold]{d['name']}[/bold]{extra}: {d['does']}", highlight=False)
    if d["options"]:
        table = Table("option", "type", "default", "doc", title="options", title_justify="left")
        for o in d["options"]:
            default = "(required)" if o["required"] else repr(o["default"])
            table.add_row(o["name"], o["type"], default, o["doc"], style=None)
        console.print(table, highlight=False)
    else:
        console.print("options: none", highlight=False)
    console.print(
        f"plus the keys every [[{kind.word}]] takes (docs/config.md)", highlight=False, markup=False
    )
    if d["sample"] is not None:
        console.print("sample config (sample.toml):", highlight=False)
        # Plain print: rich markup or wrapping would change the TOML.
        print(d["sample"], end="" if d["sample"].endswith("\n") else "\n")
