"""MightyOhm Geiger counter: one report line per second over its 9600 8N1 serial header.

Firmware v1.00 `sendreport()` prints "CPS, %u, CPM, %lu, uSv/hr, %u.%02u, SLOW|FAST|INST";
at power-up it prints a two-line banner instead.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pilog.drivers.base import Payload
from pilog.drivers.serialport import BadLineError, SerialLineDriver, SerialOptions, ascii_text

_REPORT = re.compile(
    r"CPS, (?P<cps>\d{1,5}), CPM, (?P<cpm>\d{1,10}), uSv/hr, (?P<usv>\d{1,8}\.\d{2}), "
    r"(?P<mode>SLOW|FAST|INST)"
)
_BANNER = ("mightyohm.com Geiger Counter", "http://mightyohm.com/geiger")
# The firmware counts a second in a 16-bit unsigned int (%u).
MAX_CPS = 65535


class GeigerOptions(SerialOptions, forbid_unknown_fields=True, frozen=True):
    """A MightyOhm counter on a serial port (the firmware's fixed rate is 9600 baud)."""


def decode_report(line: str) -> Payload | None:
    """`cps`, `cpm`, `usv_per_h` and `mode` of a report line; None for the power-up banner.

    Raises BadLineError for anything else (a partial line, garbage).
    """
    if line.startswith(_BANNER):
        return None
    m = _REPORT.fullmatch(line)
    if m is None:
        raise BadLineError("not a MightyOhm report line")
    cps, cpm = int(m["cps"]), int(m["cpm"])
    if cps > MAX_CPS:
        raise BadLineError(f"CPS {cps} out of range")
    return {"cps": cps, "cpm": cpm, "usv_per_h": float(m["usv"]), "mode": m["mode"]}


class GeigerDriver(SerialLineDriver):
    """A MightyOhm Geiger counter kit: counts per second and minute, dose rate, mode."""

    name: ClassVar[str] = "geiger"
    description: ClassVar[str] = "MightyOhm Geiger counter over serial (CPS, CPM, uSv/h)"
    sensor_type: ClassVar[str] = "radiation"
    Options = GeigerOptions
    max_line_bytes: ClassVar[int] = 128  # a report is under 50 bytes

    def decode_line(self, line: bytes) -> Payload | None:
        text = ascii_text(line)
        payload = decode_report(text)
        if payload is None:
            # A power-up is a state change worth one line, not a reject.
            self.ctx.log.info("%s: counter powered up (%s)", self.ctx.sensor.name, text)
        return payload


DRIVER = GeigerDriver
