"""Bus access shared by drivers: the bus from the context when a test gives one, else the real one.

A bus from the context belongs to whoever made it; a bus the driver opened is the driver's to
close. These helpers keep that rule in one place.
"""

from __future__ import annotations

import contextlib
from typing import Any

import smbus2

from pilog.drivers.base import DriverContext


def open_i2c(ctx: DriverContext, bus: int) -> tuple[Any, bool]:
    """(the I2C bus to use, whether the driver owns it): `ctx.smbus`, else smbus2.SMBus(bus)."""
    if ctx.smbus is not None:
        return ctx.smbus, False
    return smbus2.SMBus(bus), True


def close_owned(bus: Any, owned: bool) -> None:
    """Close `bus` if the driver opened it; never raises (the device may be gone)."""
    if bus is not None and owned:
        with contextlib.suppress(OSError):
            bus.close()
