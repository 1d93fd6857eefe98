"""Microchip MCP3008/MCP3004 10-bit ADC over SPI (datasheet DS21295)."""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from pilog.drivers.base import DriverContext, Payload, PollingDriver
from pilog.drivers.transports import device_error

START_BYTE = 0x01  # seven leading zeros, then the start bit (§6.1, Figure 6-1)
SINGLE_ENDED = 0x08  # SGL/DIFF = 1 (Table 5-2)
NULL_BIT = 0x04  # rx[1] bit 2: the low null bit before B9 (Figure 6-1)
RESULT_HIGH_BITS = 0x03  # rx[1] bits 1..0: B9 B8; rx[1] bits 7..3 float (high-Z) and are masked
MAX_CODE = 1023
MAX_SPEED_HZ = 3_600_000  # fCLK max at VDD = 5 V; 1.35 MHz at 2.7 V (§1.0 electrical specs)


class Mcp3008Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Options of the mcp3008 driver."""

    bus: int = 0  # /dev/spidev<bus>.<device>
    device: int = 0  # chip select
    channels: list[int] | None = None  # single-ended inputs; None: all 8 unless `differential`
    differential: list[list[int]] = msgspec.field(default_factory=list)  # [[IN+, IN-], ...]
    vref: float | None = None  # volts on VREF; when set, readings carry volts too
    max_speed_hz: int = 1_000_000

    def __post_init__(self) -> None:
        if self.bus < 0 or self.device < 0:
            raise ValueError("bus and device must be 0 or more")
        chans = self.single_ended()
        if any(not 0 <= c <= 7 for c in chans) or len(set(chans)) != len(chans):
            raise ValueError("channels must be distinct inputs 0..7")
        for pair in self.differential:
            # Only the pairs of Table 5-2 exist: CH0/CH1, CH2/CH3, ... in either polarity.
            if len(pair) != 2 or not 0 <= pair[0] <= 7 or pair[1] != pair[0] ^ 1:
                raise ValueError(
                    f"differential pair {pair} is not one of the chip's: [0, 1], [1, 0], "
                    "[2, 3], [3, 2], ... [7, 6] as [IN+, IN-]"
                )
        if not chans and not self.differential:
            raise ValueError("nothing to read: give channels or differential pairs")
        if self.vref is not None and not (math.isfinite(self.vref) and self.vref > 0):
            raise ValueError("vref must be a positive number of volts")
        if not 0 < self.max_speed_hz <= MAX_SPEED_HZ:
            raise ValueError(f"max_speed_hz must be 1..{MAX_SPEED_HZ} (datasheet fCLK max)")

    def single_ended(self) -> list[int]:
        """The single-ended inputs to read."""
        if self.channels is not None:
            return list(self.channels)
        return [] if self.differential else list(range(8))


def request(single_ended: bool, select: int) -> list[int]:
    """The three bytes that start a conversion of input (or pair) `select` (Figure 6-1)."""
    config = (SINGLE_ENDED if single_ended else 0) | (select & 0b111)
    return [START_BYTE, config << 4, 0x00]


def decode(rx: Sequence[int]) -> int:
    """The 10-bit code in a response to `request`; ValueError naming what is wrong with it."""
    if len(rx) != 3:
        raise ValueError(f"response of {len(rx)} bytes, expected 3")
    if any(not 0 <= b <= 0xFF for b in rx):
        raise ValueError("response holds bits beyond its 8-bit words")
    if rx[1] & NULL_BIT:
        # The chip drives DOUT low for the null bit; high means MISO is stuck high, nothing
        # answers at this chip select, or the transfer lost clock alignment.
        raise ValueError("null bit is 1 (no MCP3008 answering, or MISO stuck high)")
    # rx[0] and rx[1] bits 7..3 are clocked while DOUT floats (Figure 6-1): masked, not read.
    code = ((rx[1] & RESULT_HIGH_BITS) << 8) | rx[2]
    assert code <= MAX_CODE  # ten bits by construction of the masks
    return code


class Mcp3008Driver(PollingDriver):
    """Reads single-ended inputs and differential pairs of an MCP3008 as 10-bit codes.

    Fields: `ch<N>_raw` (0..1023) per single-ended input, `diff<P>_<M>_raw` per pair with
    IN+ = CH<P> and IN- = CH<M>; with `vref`, also `ch<N>_v` / `diff<P>_<M>_v` in volts
    (code * vref / 1023, so code 1023 reads as vref). A response that is not data rejects
    the whole sample.
    """

    name: ClassVar[str] = "mcp3008"
    description: ClassVar[str] = "MCP3008/MCP3004 10-bit SPI ADC: raw codes and volts"
    sensor_type: ClassVar[str] = "adc"
    Options = Mcp3008Options

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        opts: Mcp3008Options = ctx.options
        self._opts = opts
        self._inputs: list[tuple[str, bool, int]] = [
            (f"ch{c}", True, c) for c in opts.single_ended()
        ] + [(f"diff{p}_{m}", False, p) for p, m in opts.differential]
        self._spi: Any = None

    def open(self) -> None:
        """Open /dev/spidev<bus>.<device> (or the context's SpiDev) in SPI mode 0."""
        spi = self.ctx.spidev
        if spi is None:
            spi = _spidev_module().SpiDev()
        try:
            spi.open(self._opts.bus, self._opts.device)
        except OSError as e:  # py-spidev's error names no path: "[Errno 2] No such file ..."
            path = f"/dev/spidev{self._opts.bus}.{self._opts.device}"
            raise device_error(e, path, "spi") from e
        try:
            spi.max_speed_hz = self._opts.max_speed_hz
            spi.mode = 0  # modes 0,0 and 1,1 are the chip's (§6.1); mode 0 is the common one
        except BaseException:
            spi.close()
            raise
        self._spi = spi

    def poll(self) -> list[Payload]:
        """Convert each configured input once; [] and a rejection if any answer is garbage."""
        payload: Payload = {}
        for field, single_ended, select in self._inputs:
            rx = self._spi.xfer2(request(single_ended, select))
            try:
                code = decode(rx)
            except ValueError as e:
                self.reject(f"{field}: {e}")
                return []
            payload[f"{field}_raw"] = code
            if self._opts.vref is not None:
                payload[f"{field}_v"] = code * self._opts.vref / MAX_CODE
        return [payload]

    def close(self) -> None:
        """Close the SPI device; never raises."""
        spi, self._spi = self._spi, None
        if spi is not None:
            with contextlib.suppress(Exception):  # close must not raise; the device may be gone
                spi.close()


def _spidev_module() -> Any:
    """The spidev module, or an error that says how to install it (it is an extra)."""
    try:
        return importlib.import_module("spidev")
    except ImportError as e:
        raise ModuleNotFoundError(
            "the mcp3008 driver needs spidev, which pilog does not install by default: "
            "apt install python3-spidev with pilog in a venv made with --system-site-packages, "
            "or pip install spidev into pilog's environment (needs a compiler; the [spi] extra "
            "of pilog's wheel does the same; docs/install.md, SPI sensors)"
        ) from e


DRIVER = Mcp3008Driver
