"""Plantower PMS5003/PMS7003 particulate sensors on a serial port (9600 8N1, active mode)."""

from __future__ import annotations

from typing import ClassVar

from pilog.drivers.base import DriverContext, Payload, StreamingDriver
from pilog.drivers.pms5003.frame import CommandAck, FrameScanner, Measurement
from pilog.drivers.serialport import SerialOptions, SerialPort

# PMS5003 datasheet, "Output result" note: stable data 30 s after wake-up, because of the fan.
WARMUP_S = 30.0
SLEEP_COMMAND = 0xE4  # sleep/wake (datasheet, "Appendix II"); the fan restarts after a wake
SIZES_UM = ("0_3", "0_5", "1_0", "2_5", "5_0", "10")
PM_NAMES = ("pm1_0", "pm2_5", "pm10")


class Pms5003Driver(StreamingDriver):
    """Mass concentrations (atmospheric and CF=1) and particle counts per 0.1 L.

    All-zero frames are rejected while the fan warms up: until the first frame with data or
    WARMUP_S after opening or waking, whichever is first; afterwards zero is clean air.
    """

    name: ClassVar[str] = "pms5003"
    description: ClassVar[str] = "Plantower PMS5003/7003 particulate matter (serial)"
    sensor_type: ClassVar[str] = "particulate"
    Options = SerialOptions  # port, and baud: 9600 (datasheet, "default baud rate 9600")

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        opts: SerialOptions = ctx.options
        self._port = SerialPort(opts.port, opts.baud)
        self._scanner = FrameScanner()
        self._warm_from_ns = 0  # mono_ns at which all-zero frames become readings
        self._warm = False

    def open(self) -> None:
        self._port.open()
        self._scanner = FrameScanner()
        self._start_warmup()

    def read(self) -> list[Payload]:
        """Wait up to READ_WAIT_S for bytes; return the measurements they completed."""
        frames, problems = self._scanner.feed(self._port.read())
        for reason in problems:
            self.reject(reason)
        out: list[Payload] = []
        for frame in frames:
            if isinstance(frame, CommandAck):
                if frame.command == SLEEP_COMMAND:
                    self._start_warmup()
                continue
            payload = self._accept(frame)
            if payload is not None:
                out.append(payload)
        return out

    def close(self) -> None:
        self._port.close()

    def _start_warmup(self) -> None:
        self._warm = False
        self._warm_from_ns = self.ctx.clock.mono_ns() + int(WARMUP_S * 1e9)

    def _accept(self, m: Measurement) -> Payload | None:
        if not self._warm:
            self._warm = not m.all_zero or self.ctx.clock.mono_ns() >= self._warm_from_ns
        if not self._warm:
            self.reject("all-zero frame while the fan warms up")
            return None
        return to_payload(m)


def to_payload(m: Measurement) -> Payload:
    """The reading of a measurement: atmospheric PM as `pmX_ugm3`, CF=1 as `pmX_cf1_ugm3`."""
    out: Payload = {}
    for name, atm, cf1 in zip(PM_NAMES, m.pm_atm, m.pm_cf1, strict=True):
        out[f"{name}_ugm3"] = atm
        out[f"{name}_cf1_ugm3"] = cf1
    for size, count in zip(SIZES_UM, m.counts, strict=True):
        out[f"n{size}um_per_0_1l"] = count
    return out


DRIVER = Pms5003Driver
