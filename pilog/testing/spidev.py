"""A stand-in for `spidev.SpiDev`, with datasheet simulators of the chips on the bus.

In the manner of gpiozero's `MockSPIDevice`: `FakeSpiDev` has the methods and attributes of
`spidev.SpiDev` that drivers use and clocks each transfer bit by bit through the `SpiDevice`
attached at (bus, chip select), which answers as the chip's datasheet says it would:

    adc = Mcp3008Sim(vref=3.3)
    adc.set_voltage(0, 1.65)
    spi = FakeSpiDev({(0, 0): adc})
    run_driver("mcp3008", {"channels": [0], "vref": 3.3}, spidev=spi)

Behaviour copied from the real module (py-spidev 3.x): `open` of a bus/device with nothing
attached raises FileNotFoundError (no /dev/spidevX.Y), and every transfer or attribute change
on a closed object raises OSError(EBADF). Not modelled: SPI modes 1 and 2 (the fake clocks as
mode 0 whatever `mode` says), words other than 8 bits, `cshigh`, 3-wire and loop modes.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

_ZEROS_AFTER_DATA = 0  # what an MCP3008 shifts out once its data is done (§5.0)


class SpiDevice(Protocol):
    """One chip on a bus: clocked one bit at a time while its chip select is low.

    Implementors guarantee that `select` starts a fresh transaction whatever came before,
    and that `clock` returns the chip's DOUT (0 or 1; a floating line reads as either).
    """

    def select(self) -> None:
        """Chip select falls: a new transaction starts."""

    def clock(self, mosi: int) -> int:
        """One SCLK cycle: the DIN bit the master drives in, the DOUT bit it reads back."""

    def deselect(self) -> None:
        """Chip select rises: the transaction ends."""


class FakeSpiDev:
    """`spidev.SpiDev` over simulated chips, keyed by (bus, device) as /dev/spidevBUS.DEVICE."""

    def __init__(self, devices: Mapping[tuple[int, int], SpiDevice] | None = None) -> None:
        self.devices: dict[tuple[int, int], SpiDevice] = dict(devices or {})
        self.transfers: list[tuple[list[int], list[int]]] = []  # (tx, rx) of every transfer
        self._chip: SpiDevice | None = None
        self._mode = 0
        self._max_speed_hz = 0
        self._bits_per_word = 0
        self._lsbfirst = False

    # -- opening -------------------------------------------------------------------------

    def open(self, bus: int, device: int) -> None:
        """Connect to /dev/spidev<bus>.<device>; FileNotFoundError if no chip is there."""
        chip = self.devices.get((bus, device))
        if chip is None:
            path = f"/dev/spidev{bus}.{device}"
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        self._chip = chip
        # The kernel's defaults after open, as the real module reports them.
        self._mode, self._bits_per_word, self._lsbfirst = 0, 8, False
        self._max_speed_hz = 500_000

    def close(self) -> None:
        """Disconnect; closing twice is harmless, as with the real module."""
        self._chip = None

    def __enter__(self) -> FakeSpiDev:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- attributes ----------------------------------------------------------------------

    @property
    def mode(self) -> int:
        """SPI mode (CPOL << 1 | CPHA)."""
        return self._mode

    @mode.setter
    def mode(self, value: int) -> None:
        self._opened()
        if value not in (0, 1, 2, 3):
            raise TypeError("The mode attribute must be an integer between 0 and 3")
        self._mode = value

    @property
    def max_speed_hz(self) -> int:
        """SCLK frequency of transfers."""
        return self._max_speed_hz

    @max_speed_hz.setter
    def max_speed_hz(self, value: int) -> None:
        self._opened()
        self._max_speed_hz = int(value)

    @property
    def bits_per_word(self) -> int:
        """Bits per word; the fake supports 8 only."""
        return self._bits_per_word

    @bits_per_word.setter
    def bits_per_word(self, value: int) -> None:
        self._opened()
        if value != 8:
            # A limit of the simulation, not of the device: say so rather than mis-simulate.
            raise ValueError(f"FakeSpiDev simulates 8-bit words only, not {value}")
        self._bits_per_word = value

    @property
    def lsbfirst(self) -> bool:
        """Bit order of each word on the wire."""
        return self._lsbfirst

    @lsbfirst.setter
    def lsbfirst(self, value: bool) -> None:
        self._opened()
        self._lsbfirst = bool(value)

    # -- transfers -----------------------------------------------------------------------

    def xfer2(self, values: Sequence[int], *_speed_delay_bits: int) -> list[int]:
        """One transaction: chip select held low across all the bytes."""
        chip = self._opened()
        tx = _checked_bytes(values)
        chip.select()
        try:
            rx = [self._word(chip, b) for b in tx]
        finally:
            chip.deselect()
        self.transfers.append((tx, rx))
        return rx

    def xfer(self, values: Sequence[int], *_speed_delay_bits: int) -> list[int]:
        """As the real `xfer` documents: chip select released and reasserted between bytes."""
        chip = self._opened()
        tx = _checked_bytes(values)
        rx = []
        for b in tx:
            chip.select()
            try:
                rx.append(self._word(chip, b))
            finally:
                chip.deselect()
        self.transfers.append((tx, rx))
        return rx

    def readbytes(self, n: int) -> list[int]:
        """Read `n` bytes while sending zeros."""
        return self.xfer2([0] * n)

    def writebytes(self, values: Sequence[int]) -> None:
        """Send bytes, discarding what comes back."""
        self.xfer2(values)

    def _word(self, chip: SpiDevice, byte: int) -> int:
        order = range(8) if self._lsbfirst else range(7, -1, -1)
        out = 0
        for i in order:
            out |= (chip.clock((byte >> i) & 1) & 1) << i
        return out

    def _opened(self) -> SpiDevice:
        if self._chip is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return self._chip


def _checked_bytes(values: Sequence[int]) -> list[int]:
    tx = [int(v) for v in values]
    if not tx:
        raise TypeError("Empty argument list.")
    if any(not 0 <= v <= 0xFF for v in tx):
        raise OverflowError("Byte value out of range 0-255")
    return tx


class Mcp3008Sim:
    """Microchip MCP3008 (8 inputs) or MCP3004 (4): 10-bit SAR ADC, datasheet DS21295.

    Holds a voltage per input (`set_voltage`, or `set_code` for an exact output code) and
    answers the serial protocol of §5.0 Figure 5-1 bit by bit: DOUT floats (reading as
    `floating`, 0 or 1) until the start bit and the four configuration bits SGL/DIFF, D2, D1,
    D0 are in; one clock samples; then a null bit (0), B9..B0 MSB first, B1..B9 LSB first if
    the clock keeps running, then zeros. Leading zeros before the start bit are ignored, which
    is what lets an 8-bit SPI port align the result to byte boundaries (§6.1, Figure 6-1).
    """

    def __init__(self, vref: float = 3.3, *, inputs: int = 8, floating: int = 0) -> None:
        if inputs not in (4, 8):
            raise ValueError("an MCP3004 has 4 inputs, an MCP3008 has 8")
        if not (math.isfinite(vref) and vref > 0):
            raise ValueError("vref must be a positive number of volts")
        self.vref = vref
        self.inputs = inputs
        self.floating = floating & 1
        self.voltages = [0.0] * inputs
        self.conversions = 0  # completed samplings, for tests that count reads
        self._clocks_since_start: int | None = None  # None: waiting for the start bit
        self._config = 0  # SGL/DIFF, D2, D1, D0 as shifted in
        self._result = 0

    def set_voltage(self, channel: int, volts: float) -> None:
        """Put `volts` on input CH`channel`."""
        self.voltages[self._channel(channel)] = volts

    def set_code(self, channel: int, code: int) -> None:
        """Put on CH`channel` the voltage in the middle of output code `code`'s step."""
        if not 0 <= code <= 1023:
            raise ValueError("an MCP3008 code is 10 bits: 0..1023")
        self.set_voltage(channel, (code + 0.5) * self.vref / 1024)

    def code(self, single_ended: bool, select: int) -> int:
        """The output code for a configuration (datasheet Table 5-2, Equation 4-1)."""
        if single_ended:
            vin = self.voltages[self._channel(select)]
        else:
            # Differential pairs: D2..D0 = n puts IN+ on CHn and IN- on CH(n xor 1); a
            # negative difference converts to 000h (Table 5-2).
            vin = self.voltages[self._channel(select)] - self.voltages[self._channel(select ^ 1)]
        # Equation 4-1: code = 1024 * VIN / VREF, saturating at 3FFh.
        return max(0, min(1023, math.floor(1024 * vin / self.vref)))

    def _channel(self, n: int) -> int:
        # The MCP3004 ignores D2 (its Table 5-1 marks it "don't care").
        n = n & 0b011 if self.inputs == 4 else n
        if not 0 <= n < self.inputs:
            raise IndexError(f"the simulated chip has inputs CH0..CH{self.inputs - 1}")
        return n

    # -- the SpiDevice protocol ----------------------------------------------------------

    def select(self) -> None:
        """CS/SHDN falls: the device waits for a start bit."""
        self._clocks_since_start = None
        self._config = 0

    def deselect(self) -> None:
        """CS/SHDN rises: any conversion under way is abandoned (§5.0)."""
        self._clocks_since_start = None

    def clock(self, mosi: int) -> int:
        """One clock: DIN in, DOUT out, by the clock count since the start bit (Figure 5-1)."""
        k = self._clocks_since_start
        if k is None:
            if mosi & 1:  # the first high DIN after CS falls is the start bit
                self._clocks_since_start = 0
            return self.floating
        k += 1
        self._clocks_since_start = k
        if k <= 4:  # SGL/DIFF, D2, D1, D0
            self._config = (self._config << 1) | (mosi & 1)
            if k == 4:
                self._sample()
            return self.floating
        if k == 5:  # tSAMPLE ends on this clock's falling edge; DOUT still floats
            return self.floating
        if k == 6:  # the null bit
            return 0
        if k <= 16:  # B9..B0, MSB first
            return (self._result >> (16 - k)) & 1
        if k <= 25:  # B1..B9, LSB first (B0 is not repeated)
            return (self._result >> (k - 16)) & 1
        return _ZEROS_AFTER_DATA

    def _sample(self) -> None:
        single_ended = bool(self._config & 0b1000)
        self._result = self.code(single_ended, self._config & 0b111)
        self.conversions += 1


class StuckBus:
    """A chip select with no working chip: MISO held at `level`, a wiring fault's signature."""

    def __init__(self, level: int) -> None:
        self.level = level & 1

    def select(self) -> None:
        """Nothing answers."""

    def clock(self, mosi: int) -> int:
        """The line stays where the fault holds it."""
        return self.level

    def deselect(self) -> None:
        """Nothing answers."""


if TYPE_CHECKING:
    # mypy checks here that the simulators satisfy the protocol FakeSpiDev clocks.
    _adc: SpiDevice = Mcp3008Sim()
    _stuck: SpiDevice = StuckBus(1)
