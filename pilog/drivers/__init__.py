"""Drivers: the registry of built-in drivers and the public base classes.

A sensor's `driver` key names a built-in driver (a folder here: `synthetic`), a class by
`"package.module:Class"`, or an entry point in the `pilog.drivers` group.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from pilog.drivers.base import (
    DriverContext,
    NoOptions,
    Payload,
    PollingDriver,
    StreamingDriver,
)
from pilog.errors import ConfigError

__all__ = [
    "BUILTIN",
    "DriverContext",
    "NoOptions",
    "Payload",
    "PollingDriver",
    "StreamingDriver",
    "find_driver",
]

_HERE = Path(__file__).parent
# Every folder here with a driver.py is a built-in driver named after the folder; its module
# exposes the class as DRIVER (Telegraf's plugins/inputs/<name>/ layout).
BUILTIN: dict[str, str] = {
    p.parent.name: f"pilog.drivers.{p.parent.name}.driver:DRIVER"
    for p in sorted(_HERE.glob("*/driver.py"))
}


def find_driver(ref: str) -> type[PollingDriver]:
    """The driver class named by a built-in name, "module:Class", or an entry point."""
    target = BUILTIN.get(ref)
    if target is None and ":" in ref:
        target = ref
    if target is None:
        for ep in entry_points(group="pilog.drivers"):
            if ep.name == ref:
                return _checked(ref, ep.load())
        known = ", ".join(sorted(BUILTIN))
        raise ConfigError(f"unknown driver '{ref}' (built-in: {known}; or 'package.module:Class')")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"driver '{ref}': cannot import {module_name}: {e}") from e
    try:
        cls = getattr(module, cls_name)
    except AttributeError:
        raise ConfigError(f"driver '{ref}': {module_name} has no {cls_name}") from None
    return _checked(ref, cls)


def _checked(ref: str, cls: object) -> type[PollingDriver]:
    if not (isinstance(cls, type) and issubclass(cls, PollingDriver)):
        raise ConfigError(f"driver '{ref}' is not a pilog.drivers.PollingDriver subclass")
    return cls
