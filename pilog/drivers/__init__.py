"""Drivers: the registry of built-in drivers and the public base classes.

A sensor's `driver` key names a built-in driver (a folder here: `synthetic`), a class by
`"package.module:Class"`, or an entry point in the `pilog.drivers` group.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pilog.config import SensorConfig, unknown_keys
from pilog.drivers.base import (
    DriverContext,
    Payload,
    PollingDriver,
    StreamingDriver,
    parse_options,
)
from pilog.errors import ConfigError, ConfigProblemsError
from pilog.plugins import NoOptions, PluginKind, find_plugin

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


KIND = PluginKind("driver", BUILTIN, "pilog.drivers", "pilog drivers")


def find_driver(ref: str, search: Sequence[Path] = ()) -> type[PollingDriver]:
    """The driver class named by a built-in name, "module:Class", or an entry point.

    `search`: directories where a "module:Class" driver's module may live (the config file's
    directory and its `driver_paths`); they join sys.path after the installed packages.
    """
    return _checked(ref, find_plugin(KIND, ref, search))


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


def _checked(ref: str, cls: object) -> type[PollingDriver]:
    if not (isinstance(cls, type) and issubclass(cls, PollingDriver)):
        raise ConfigError(f"driver '{ref}' is not a pilog.drivers.PollingDriver subclass")
    return cls
