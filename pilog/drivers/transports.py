"""Bus access shared by drivers: the bus from the context when a test gives one, else the real one.

A bus from the context belongs to whoever made it; a bus the driver opened is the driver's to
close. These helpers keep that rule in one place, and `device_error` is the one place that
turns a device node that will not open into an error naming the node and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from typing import Any, Literal

import smbus2

from pilog.drivers.base import DriverContext


def open_i2c(ctx: DriverContext, bus: int) -> tuple[Any, bool]:
    """(the I2C bus to use, whether the driver owns it): `ctx.smbus`, else smbus2.SMBus(bus)."""
    if ctx.smbus is not None:
        return ctx.smbus, False
    try:
        return smbus2.SMBus(bus), True
    except OSError as e:
        raise device_error(e, f"/dev/i2c-{bus}", "i2c") from e


def close_owned(bus: Any, owned: bool) -> None:
    """Close `bus` if the driver opened it; never raises (the device may be gone)."""
    if bus is not None and owned:
        with contextlib.suppress(OSError):
            bus.close()


BusKind = Literal["i2c", "spi", "serial", "w1"]

# Raspberry Pi OS Bookworm moved the boot partition; older releases mount it at /boot.
_CONFIG_TXT = "/boot/firmware/config.txt (older: /boot/config.txt)"
_ENABLE = {
    "i2c": (
        "I2C is off or the bus number is wrong: on a Raspberry Pi add dtparam=i2c_arm=on to "
        f"{_CONFIG_TXT} or run `sudo raspi-config nonint do_i2c 0`, then reboot"
    ),
    "spi": (
        "SPI is off or bus/device is wrong: on a Raspberry Pi add dtparam=spi=on to "
        f"{_CONFIG_TXT} or run `sudo raspi-config nonint do_spi 0`, then reboot"
    ),
    "serial": (
        f"the UART is off: on a Raspberry Pi add enable_uart=1 to {_CONFIG_TXT}, remove "
        "console=serial0,115200 from cmdline.txt (the serial console holds the port), then reboot"
    ),
    "w1": (
        f"the 1-wire bus is off: on a Raspberry Pi add dtoverlay=w1-gpio to {_CONFIG_TXT} "
        "or enable 1-Wire under Interface Options in `sudo raspi-config`, then reboot; the "
        "data line goes to GPIO 4, or to N with dtoverlay=w1-gpio,gpiopin=N"
    ),
}
_GROUP = {"i2c": "i2c", "spi": "spi", "serial": "dialout"}
# What to check when the bus is up but a DS18B20 (or another 1-wire device) is not on it:
# the datasheet's (19-7487, "Powering the DS18B20") 4.7 kΩ pull-up on the data line.
W1_WIRING = (
    "check the probe's wiring (data to the dtoverlay=w1-gpio pin, GPIO 4 by default, with a "
    "4.7 kΩ pull-up to 3.3 V) and its id"
)
# The Pi's own UARTs; any other serial device (USB adapters) is absent because it is unplugged.
_PI_UART = re.compile(r"ttyAMA\d+|ttyS0|serial[01]")


# What an I2C adapter reports when no device ACKs its address: EREMOTEIO on the Pi's
# i2c-bcm2835, ENXIO on some others (Linux Documentation/i2c/fault-codes.rst).
I2C_NO_ANSWER_ERRNOS = frozenset({errno.EREMOTEIO, errno.ENXIO})


def i2c_no_answer_error(e: OSError, bus: int, address: int) -> OSError:
    """A NACK `e` at open as the same OSError kind naming the bus, the address and what to check."""
    reason = e.strerror or str(e)
    error = type(OSError(e.errno, reason))(
        f"no device answers at 0x{address:02x} on /dev/i2c-{bus} ({reason}): check the wiring "
        f"and the address (i2cdetect -y {bus} lists the addresses that answer)"
    )
    error.errno = e.errno
    return error


def device_error_message(err: int | None, path: str, bus: BusKind, reason: str = "") -> str:
    """Why `path` would not open (errno `err`) and what to do about it, in one sentence."""
    if err in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        if bus != "serial" or _PI_UART.fullmatch(os.path.basename(path)):
            return f"{path} does not exist ({_ENABLE[bus]})"
        return (
            f"{path} does not exist: plug the device in, or pick its name from "
            "ls /dev/serial/by-id/ (stable across re-plugging)"
        )
    if err in (errno.EACCES, errno.EPERM):
        group = _GROUP.get(bus)
        if group is None:  # 1-wire: w1_therm's sysfs files are world-readable unless changed
            return f"{path}: permission denied: make it readable by the user pilog runs as"
        return (
            f"{path}: permission denied: add the user pilog runs as to group {group} "
            f"(sudo usermod -aG {group} USER), then log in again or restart the service"
        )
    return f"{path} would not open: {reason or os.strerror(err or 0)}"


def device_error(e: OSError, path: str, bus: BusKind) -> OSError:
    """`e`, raised opening device node `path`, as the same OSError kind naming path and fix."""
    reason = e.strerror or str(e)
    # OSError(errno, ...) picks the subclass (FileNotFoundError, PermissionError), so callers
    # that catch those keep working; one argument keeps str() free of the "[Errno 2]" prefix.
    kind = type(OSError(e.errno, reason)) if e.errno is not None else OSError
    error = kind(device_error_message(e.errno, path, bus, reason))
    error.errno = e.errno  # strerror and filename stay unset: they would replace the message
    return error


def w1_missing_message(root: str, devices: list[str]) -> str:
    """Why listed 1-wire `devices` are not under `root` (the bus's sysfs dir), and what to do."""
    paths = ", ".join(f"{root}/{d}" for d in devices)
    verb = "does" if len(devices) == 1 else "do"
    return f"{paths} {verb} not exist: {W1_WIRING} (ls {root} lists the devices the bus found)"
