"""The driver contract.

A driver turns a device into payloads (`dict[str, Value]`, field names carrying units);
the runtime stamps seq, wall time, monotonic time and boot id. Drivers never touch the log or
the wall clock: their config, clock and logger arrive in a `DriverContext`.

A `PollingDriver` is called on a drift-free schedule: `poll` returns zero or more payloads.
If `blocking` is true (the default: bus I/O), `poll` runs in a worker thread so the event
loop never waits on a device. Implementors guarantee:

- `open` acquires the device or raises; `close` releases it and never raises.
- `poll` returns promptly or raises; an exception means "report and restart me".
- Values are finite numbers, strings or booleans; a rejected sample is simply not returned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec

from pilog.clock import Clock
from pilog.config import SensorConfig
from pilog.errors import ConfigError
from pilog.events import Value

Payload = dict[str, Value]


class NoOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Options of a driver that takes none."""


@dataclass
class DriverContext:
    """What a driver may use: its sensor config and options, a clock and a logger."""

    sensor: SensorConfig
    options: Any
    clock: Clock
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pilog.driver"))


class PollingDriver:
    """Base class of drivers sampled on a schedule (`interval_ms`)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    sensor_type: ClassVar[str] = ""
    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    blocking: ClassVar[bool] = True

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx

    def open(self) -> None:
        """Acquire the device."""

    def poll(self) -> list[Payload]:
        """Sample the device once; return its payloads."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the device."""


def parse_options(driver: type[PollingDriver], sensor: SensorConfig, source: str) -> Any:
    """Validate a sensor's driver options against the driver's `Options` struct."""
    try:
        return msgspec.convert(sensor.options, driver.Options)
    except msgspec.ValidationError as e:
        where = f"sensor '{sensor.name}' (driver {driver.name})"
        raise ConfigError(f"{source}: {where}: {_strip_path(str(e))}") from e


def _strip_path(message: str) -> str:
    return message.replace(" - at `$`", "").replace("- at `$.", "- at `")
