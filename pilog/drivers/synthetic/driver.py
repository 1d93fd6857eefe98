"""Deterministic sine and counter values, for demos, tests and benchmarks."""

from __future__ import annotations

import math
from typing import ClassVar

import msgspec

from pilog.drivers.base import DriverContext, Payload, PollingDriver


class SyntheticOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    period_s: float = 60.0  # of the sine waves, counted in polls times interval
    batch: int = 1  # payloads per poll (benchmarks use more to amortise scheduling)


class SyntheticDriver(PollingDriver):
    """A virtual weather station: temperature, humidity and pressure as slow sine waves.

    Values depend only on the poll count, so two runs produce the same readings.
    """

    name: ClassVar[str] = "synthetic"
    description: ClassVar[str] = "deterministic sine waves (temperature, humidity, pressure)"
    sensor_type: ClassVar[str] = "synthetic"
    Options = SyntheticOptions
    blocking: ClassVar[bool] = False

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        opts: SyntheticOptions = ctx.options
        interval_s = max(ctx.sensor.interval_ms, 1) / 1000
        self._step = 2 * math.pi * interval_s / max(opts.period_s, 1e-3)
        self._batch = max(opts.batch, 1)
        self._n = 0

    def poll(self) -> list[Payload]:
        out: list[Payload] = []
        for _ in range(self._batch):
            phase = self._n * self._step
            out.append(
                {
                    "temperature_c": 21.0 + 4.0 * math.sin(phase),
                    "humidity_pct": 45.0 + 10.0 * math.cos(phase),
                    "pressure_hpa": 1013.25 + 2.0 * math.sin(phase / 3),
                }
            )
            self._n += 1
        return out


DRIVER = SyntheticDriver
