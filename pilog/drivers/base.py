"""The driver contract.

A driver turns a device into payloads (`dict[str, Value]`, field names carrying units);
the runtime stamps seq, wall time, monotonic time and boot id. Drivers never touch the log or
the wall clock: their config, clock and logger arrive in a `DriverContext`.

A `PollingDriver` is called on a drift-free schedule: `poll` returns zero or more payloads.
A `StreamingDriver` delivers as data arrives: the runtime calls `read` again and again.
If `blocking` is true (the default: bus I/O), these calls run on the driver's own worker
thread so the event loop never waits on a device. Implementors guarantee:

- `open` acquires the device or raises; `close` releases it and never raises.
- `poll` returns promptly, `read` within `READ_WAIT_S` (with [] when nothing came), or
  they raise; an exception means "report, close, reopen with backoff" (a serial port that
  vanished is reopened this way).
- Values are finite numbers, strings or booleans. Bad input (garbage, bad checksum, out of
  range) is passed to `reject(reason)` and never returned as a reading.
- Buses come from the context when given (`ctx.smbus`, `ctx.spidev`: objects with the
  smbus2.SMBus / spidev.SpiDev methods the driver uses); otherwise the driver opens the real
  bus. Files under /sys and /proc are read below `ctx.sysfs_root` and `ctx.procfs_root`.
"""

from __future__ import annotations

import abc
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from pilog.clock import Clock
from pilog.config import SensorConfig
from pilog.errors import ConfigError
from pilog.events import Value
from pilog.plugins import NoOptions

Payload = dict[str, Value]
READ_WAIT_S = 1.0  # the longest a StreamingDriver.read may wait for data before returning []


@dataclass
class DriverContext:
    """What a driver may use: its sensor config and options, a clock and a logger."""

    sensor: SensorConfig
    options: Any
    clock: Clock
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pilog.driver"))
    smbus: Any = None  # an smbus2.SMBus-like object to use instead of opening the bus
    spidev: Any = None  # a spidev.SpiDev-like object to use instead of opening the device
    sysfs_root: Path = Path("/sys")
    procfs_root: Path = Path("/proc")
    data_dir: Path | None = None


class PollingDriver(abc.ABC):
    """Base class of drivers sampled on a schedule (`interval_ms`)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    sensor_type: ClassVar[str] = ""
    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    blocking: ClassVar[bool] = True

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx
        self.rejected: Counter[str] = Counter()

    def reject(self, reason: str) -> None:
        """Count a sample that is not data; logged the first time each reason occurs."""
        self.rejected[reason] += 1
        if self.rejected[reason] == 1:
            self.ctx.log.warning("%s: rejected input: %s", self.ctx.sensor.name, reason)

    def open(self) -> None:  # noqa: B027 - optional: drivers without a device keep it
        """Acquire the device."""

    @abc.abstractmethod
    def poll(self) -> list[Payload]:
        """Sample the device once; return its payloads."""

    def close(self) -> None:  # noqa: B027 - optional, as open
        """Release the device."""


class StreamingDriver(PollingDriver):
    """Base class of drivers that deliver as data arrives (serial lines, TCP, MQTT).

    `interval_ms` does not apply; the runtime calls `read` in a loop.
    """

    @abc.abstractmethod
    def read(self) -> list[Payload]:
        """Wait up to READ_WAIT_S for input; return the payloads it completed ([] if none)."""

    def poll(self) -> list[Payload]:
        return self.read()


def parse_options(driver: type[PollingDriver], sensor: SensorConfig, source: str) -> Any:
    """Validate a sensor's driver options against the driver's `Options` struct."""
    try:
        return msgspec.convert(sensor.options, driver.Options)
    except msgspec.ValidationError as e:
        where = f"sensor '{sensor.name}' (driver {driver.name})"
        raise ConfigError(f"{source}: {where}: {_strip_path(str(e))}") from e


def _strip_path(message: str) -> str:
    return message.replace(" - at `$`", "").replace("- at `$.", "- at `")
