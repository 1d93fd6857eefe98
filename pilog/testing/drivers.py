"""Running a driver without pilog's runtime: how a driver author tests a driver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pilog.clock import Clock, SystemClock
from pilog.config import parse_config
from pilog.drivers import DriverContext, Payload, PollingDriver, find_driver
from pilog.drivers.base import parse_options


@contextmanager
def open_driver(
    name: str,
    config: dict[str, Any] | None = None,
    *,
    smbus: Any = None,
    spidev: Any = None,
    sysfs_root: Path | None = None,
    procfs_root: Path | None = None,
    data_dir: Path | None = None,
    clock: Clock | None = None,
) -> Iterator[PollingDriver]:
    """An opened driver `name` with the sensor keys `config` (as in pilog.toml); closed after.

    `smbus` and `spidev` are objects with the smbus2.SMBus / spidev.SpiDev methods the driver
    uses; the driver uses them instead of opening real buses. `sysfs_root` and `procfs_root`
    stand in for /sys and /proc; `data_dir` is the data dir the driver is told about.
    """
    table = {"name": f"test-{name}", "driver": name, **(config or {})}
    sensor = parse_config({"sensor": [table]}, "<run_driver>", {}).sensor[0]
    cls = find_driver(name)
    ctx = DriverContext(
        sensor,
        parse_options(cls, sensor, "<run_driver>"),
        clock or SystemClock(),
        smbus=smbus,
        spidev=spidev,
        sysfs_root=sysfs_root or Path("/sys"),
        procfs_root=procfs_root or Path("/proc"),
        data_dir=data_dir,
    )
    driver = cls(ctx)
    driver.open()
    try:
        yield driver
    finally:
        driver.close()


def run_driver(
    name: str,
    config: dict[str, Any] | None = None,
    *,
    smbus: Any = None,
    spidev: Any = None,
    sysfs_root: Path | None = None,
    procfs_root: Path | None = None,
    data_dir: Path | None = None,
    polls: int = 3,
) -> list[Payload]:
    """Open driver `name`, poll it `polls` times, return the readings' values in order.

    Rejected samples are absent; a streaming driver is read `polls` times instead.
    """
    out: list[Payload] = []
    with open_driver(
        name,
        config,
        smbus=smbus,
        spidev=spidev,
        sysfs_root=sysfs_root,
        procfs_root=procfs_root,
        data_dir=data_dir,
    ) as driver:
        for _ in range(polls):
            out.extend(driver.poll())
    return out
