"""DS18B20 1-wire thermometers through the Linux w1_therm sysfs files."""

from __future__ import annotations

import errno
import re
from typing import Annotated, ClassVar

import msgspec

from pilog.drivers.base import DriverContext, Payload, PollingDriver
from pilog.drivers.transports import W1_WIRING, device_error_message, w1_missing_message

# Family code 0x28 is the DS18B20 (datasheet 19-7487, "64-bit lasered ROM code").
DEVICE_GLOB = "28-*"
# Datasheet 19-7487, "Features": measures -55 °C to +125 °C.
RANGE_MILLI_C = (-55000, 125000)
# Datasheet 19-7487 Table 1 / Figure 7: the temperature register's power-on reset value is
# +85 °C (0x0550). w1_therm returns it with crc=YES when no conversion ran (power or timing,
# LKML "Regression: w1_therm: sysfs w1_slave sometimes report 85 degrees Celsius", 2023).
POWER_ON_MILLI_C = 85000
# w1_therm's w1_slave (drivers/w1/slaves/w1_therm.c, w1_slave_show): 9 scratchpad bytes as
# "%02x ", ": crc=%02x YES|NO", then the same 9 bytes and "t=%d" in millidegrees C.
LINE1 = re.compile(r"((?:[0-9a-f]{2} ){9}): crc=[0-9a-f]{2} (YES|NO)", re.IGNORECASE)
LINE2 = re.compile(r"(?:[0-9a-f]{2} ){9}t=(-?\d+)", re.IGNORECASE)


# The w1 core names a slave "%02x-%012llx": family code, then the 48-bit serial (w1.c).
DeviceId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{2}-[0-9a-f]{12}$")]


class Ds18b20Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    devices: list[DeviceId] = msgspec.field(default_factory=list)  # [] = every 28-* device


class Ds18b20Driver(PollingDriver):
    """Each poll reads every selected DS18B20 and returns one reading per device.

    A reading is `{"device": "28-…", "temperature_c": 21.562}`. With no `devices` option every
    `28-*` device on the bus is read, found afresh at each poll (the w1 master rescans the bus).
    """

    name: ClassVar[str] = "ds18b20"
    description: ClassVar[str] = "DS18B20 1-wire thermometers via /sys/bus/w1 (w1_therm)"
    sensor_type: ClassVar[str] = "ds18b20"
    Options = Ds18b20Options

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        self._opts: Ds18b20Options = ctx.options
        self._root = ctx.sysfs_root / "bus" / "w1" / "devices"

    def open(self) -> None:
        """Check that the bus exists and that the devices to read are on it."""
        if not self._root.is_dir():
            raise FileNotFoundError(device_error_message(errno.ENOENT, str(self._root), "w1"))
        missing = [d for d in self._opts.devices if not (self._root / d / "w1_slave").exists()]
        if missing:
            raise FileNotFoundError(w1_missing_message(str(self._root), missing))
        if not self._devices():
            raise FileNotFoundError(
                f"no DS18B20 ({DEVICE_GLOB}) under {self._root}: the 1-wire bus is up but "
                f"found none; {W1_WIRING}"
            )

    def poll(self) -> list[Payload]:
        devices = self._devices()
        if not any((self._root / d / "w1_slave").exists() for d in devices):
            # Every sensor gone (unplugged, bus master lost): the device is lost, so fail and let
            # the runtime report it once and reopen with backoff.
            raise FileNotFoundError(f"no DS18B20 to read under {self._root}")
        out: list[Payload] = []
        for device in devices:
            milli = self._read(device)
            if milli is not None:
                out.append({"device": device, "temperature_c": milli / 1000})
        return out

    def _devices(self) -> list[str]:
        if self._opts.devices:
            return list(self._opts.devices)
        return sorted(p.name for p in self._root.glob(DEVICE_GLOB) if (p / "w1_slave").exists())

    def _read(self, device: str) -> int | None:
        """The device's temperature in millidegrees C, or None (counted as rejected)."""
        try:
            # Reading w1_slave starts a conversion: up to 750 ms at 12 bits (datasheet tCONV).
            text = (self._root / device / "w1_slave").read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            self.reject(f"{device}: read failed (absent)")  # unplugged since the bus scan
            return None
        except OSError as e:
            why = errno.errorcode.get(e.errno or 0, type(e).__name__)
            self.reject(f"{device}: read failed ({why})")
            return None
        verdict = parse_w1_slave(text)
        if isinstance(verdict, str):
            self.reject(f"{device}: {verdict}")
            return None
        return verdict


def parse_w1_slave(text: str) -> int | str:
    """Millidegrees C from a w1_slave file's text, or why it is not a reading."""
    lines = text.splitlines()
    first = LINE1.fullmatch(lines[0].strip()) if lines else None
    second = LINE2.fullmatch(lines[1].strip()) if len(lines) > 1 else None
    if first is None or second is None:
        return "malformed w1_slave"
    # The kernel checked the scratchpad's CRC-8 as it read it; its verdict is the one to honour
    # (jfasch/openheating shows crc=5d NO where the printed bytes' CRC is 5d).
    if first.group(2).upper() != "YES":
        return "crc=NO"
    if first.group(1).strip() == "00 00 00 00 00 00 00 00 00":
        # All-zero scratchpad: its CRC is 0, so it passes, but the bus read nothing
        # (w1thermsensor treats it as "sensor not ready").
        return "all-zero scratchpad"
    milli = int(second.group(1))
    if milli == POWER_ON_MILLI_C:
        return "85 °C power-on reset value"
    low, high = RANGE_MILLI_C
    if not low <= milli <= high:
        return f"out of range: t={milli}"
    return milli


DRIVER = Ds18b20Driver
