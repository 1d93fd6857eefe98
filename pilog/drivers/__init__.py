"""Drivers: the registry of built-in drivers and the public base classes.

A sensor's `driver` key names a built-in driver (a folder here: `synthetic`), a class by
`"package.module:Class"`, or an entry point in the `pilog.drivers` group.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pilog.config import SensorConfig, did_you_mean, unknown_keys
from pilog.drivers.base import (
    DriverContext,
    NoOptions,
    Payload,
    PollingDriver,
    StreamingDriver,
    parse_options,
)
from pilog.errors import ConfigError, ConfigProblemsError

__all__ = [
    "BUILTIN",
    "DriverContext",
    "NoOptions",
    "Payload",
    "PollingDriver",
    "StreamingDriver",
    "find_driver",
    "load_sensor",
]

_HERE = Path(__file__).parent
# Every folder here with a driver.py is a built-in driver named after the folder; its module
# exposes the class as DRIVER (Telegraf's plugins/inputs/<name>/ layout).
BUILTIN: dict[str, str] = {
    p.parent.name: f"pilog.drivers.{p.parent.name}.driver:DRIVER"
    for p in sorted(_HERE.glob("*/driver.py"))
}


def find_driver(ref: str, search: Sequence[Path] = ()) -> type[PollingDriver]:
    """The driver class named by a built-in name, "module:Class", or an entry point.

    `search`: directories where a "module:Class" driver's module may live (the config file's
    directory and its `driver_paths`); they join sys.path after the installed packages.
    """
    target = BUILTIN.get(ref)
    if target is None and ":" in ref:
        target = ref
    if target is None:
        plugins = {ep.name: ep for ep in entry_points(group="pilog.drivers")}
        if ref in plugins:
            return _checked(ref, plugins[ref].load())
        hint = did_you_mean(ref, [*BUILTIN, *plugins]).replace("`", "")
        raise ConfigError(
            f"unknown driver '{ref}'{hint + ' ' if hint else '; '}`pilog drivers` lists them "
            "(or name a class as 'package.module:Class')"
        )
    module_name, _, cls_name = target.partition(":")
    _add_to_path(search)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        fix = ""
        if isinstance(e, ModuleNotFoundError) and e.name == module_name.partition(".")[0]:
            fix = (
                f"; put {e.name.replace('.', '/')}.py next to the config file, list its "
                "directory in driver_paths, or install its package"
            )
        raise ConfigError(f"driver '{ref}': cannot import {module_name}: {e}{fix}") from e
    try:
        cls = getattr(module, cls_name)
    except AttributeError:
        raise ConfigError(f"driver '{ref}': {module_name} has no {cls_name}") from None
    return _checked(ref, cls)


def load_sensor(
    sensor: SensorConfig, index: int, source: str, search: Sequence[Path] = ()
) -> tuple[type[PollingDriver], Any]:
    """The sensor's driver class and validated options; ConfigProblemsError names each problem."""
    where = f"{source}: sensor[{index}] (name {json.dumps(sensor.name)})"
    try:
        cls = find_driver(sensor.driver, search)
    except ConfigError as e:
        raise ConfigProblemsError([f"{where}: {e}"]) from e
    unknown = unknown_keys(sensor.options, cls.Options)
    if unknown:
        raise ConfigProblemsError([f"{where}: unknown key `{k}`{h}" for k, h in unknown.items()])
    try:
        return cls, parse_options(cls, sensor, source)
    except ConfigError as e:
        raise ConfigProblemsError([str(e)]) from e


def _add_to_path(search: Sequence[Path]) -> None:
    # Appended, not prepended: a file beside the config must not shadow an installed module.
    added = False
    for directory in search:
        entry = os.path.normpath(Path(directory).absolute())
        if entry not in sys.path:
            sys.path.append(entry)
            added = True
    if added:
        importlib.invalidate_caches()


def _checked(ref: str, cls: object) -> type[PollingDriver]:
    if not (isinstance(cls, type) and issubclass(cls, PollingDriver)):
        raise ConfigError(f"driver '{ref}' is not a pilog.drivers.PollingDriver subclass")
    return cls
