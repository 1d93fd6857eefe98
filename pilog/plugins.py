"""Finding plugin classes: drivers, sinks and projections alike.

A plugin is named in the config by a built-in name (a folder of the kind's package), by
`"package.module:Class"` (looked for in the installed packages, then in the config file's
directory and its `driver_paths`), or by an entry point of the kind's group
(`pilog.drivers`, `pilog.sinks`, `pilog.projections`). Every plugin class has an `Options`
struct: the keys of its config table that are not common to its kind.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from pilog import errors
from pilog.errors import ConfigError


class NoOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Options of a plugin that takes none."""


@dataclass(frozen=True)
class PluginKind:
    """One kind of plugin: its word in messages, its built-ins, entry point group and lister."""

    word: str  # "driver", "sink", "projection"
    builtin: Mapping[str, str]  # name -> "package.module:ATTR"
    group: str  # entry point group
    lister: str  # the command that lists them


def find_plugin(kind: PluginKind, ref: str, search: Sequence[Path] = ()) -> object:
    """The object named by a built-in name, "module:Class", or an entry point of `kind`.

    `search`: directories where a "module:Class" plugin's module may live (the config file's
    directory and its `driver_paths`); they join sys.path after the installed packages.
    """
    target = kind.builtin.get(ref)
    if target is None and ":" in ref:
        target = ref
    if target is None:
        from importlib.metadata import entry_points  # noqa: PLC0415  (slow; rarely needed)

        plugins = {ep.name: ep for ep in entry_points(group=kind.group)}
        if ref in plugins:
            loaded: object = plugins[ref].load()
            return loaded
        from pilog.config import did_you_mean  # noqa: PLC0415  (pilog.config imports this)

        hint = did_you_mean(ref, [*kind.builtin, *plugins]).replace("`", "")
        raise ConfigError(
            f"unknown {kind.word} '{ref}'{hint + ' ' if hint else '; '}`{kind.lister}` lists "
            "them (or name a class as 'package.module:Class')"
        )
    module_name, _, attr = target.partition(":")
    add_to_path(search)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        fix = ""
        if isinstance(e, ModuleNotFoundError) and e.name == module_name.partition(".")[0]:
            fix = (
                f"; put {e.name.replace('.', '/')}.py next to the config file, list its "
                "directory in driver_paths, or install its package"
            )
        raise ConfigError(f"{kind.word} '{ref}': cannot import {module_name}: {e}{fix}") from e
    try:
        found: object = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{kind.word} '{ref}': {module_name} has no {attr}") from None
    return found


def add_to_path(search: Sequence[Path]) -> None:
    """Append `search` to sys.path (appended: a file beside the config must not shadow an
    installed module)."""
    added = False
    for directory in search:
        entry = os.path.normpath(Path(directory).absolute())
        if entry not in sys.path:
            sys.path.append(entry)
            added = True
    if added:
        importlib.invalidate_caches()


def options_of(cls: object) -> type[msgspec.Struct]:
    """The plugin class's `Options` struct (NoOptions when it declares none)."""
    options = getattr(cls, "Options", NoOptions)
    if not (isinstance(options, type) and issubclass(options, msgspec.Struct)):
        raise ConfigError(f"{cls!r}: its Options is not a msgspec.Struct subclass")
    return options


def convert_options(cls: object, options: dict[str, Any]) -> Any:
    """`options` as the plugin's `Options` struct; msgspec.ValidationError when invalid."""
    from pilog.config import decode_hook  # noqa: PLC0415  (pilog.config imports this)

    return msgspec.convert(options, options_of(cls), dec_hook=decode_hook)


def extra_missing(what: str, cls: object, extra: str | None) -> str:
    """The error for a plugin class whose optional dependency is not installed."""
    module = getattr(cls, "__module__", "") or ""
    if extra is None:
        return f"{what} needs a Python package that is not installed: install it"
    if not module.startswith("pilog."):
        return (
            f'{what} needs the "{extra}" extra of its package, which is not installed: '
            f"reinstall that package with [{extra}]"
        )
    return errors.extra_missing(what, extra)
