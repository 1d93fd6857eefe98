"""Sensirion SHT3x (SHT30/31/35) temperature and humidity sensor on I²C (smbus2).

Sensirion "Datasheet SHT3x-DIS" (May 2018, v5): commands §4.3-4.11 (Tables 9-19),
CRC §4.12 (Table 20), conversion §4.13, timing §2.2 (Table 4).
"""

from __future__ import annotations

import ctypes
import time
from typing import Any, ClassVar, Literal, Protocol

import msgspec
import smbus2

from pilog.drivers.base import DriverContext, Payload, PollingDriver
from pilog.drivers.transports import (
    I2C_NO_ANSWER_ERRNOS,
    close_owned,
    i2c_no_answer_error,
    open_i2c,
)

CMD_SINGLE_SHOT_HIGH = 0x2400  # high repeatability, clock stretching disabled (Table 9)
CMD_READ_STATUS = 0xF32D  # Table 17
MEASURE_HIGH_S = 0.0155  # high-repeatability measurement, maximum (Table 4), rounded up
READ_RETRIES = 3  # a read before the result is ready is NACKed (§4.4): retry a little later
RETRY_WAIT_S = 0.002
T_RANGE_C = (-40.0, 125.0)  # specified temperature range (§1); outside it is not data


def crc8(data: bytes) -> int:
    """CRC-8, polynomial 0x31, init 0xFF, no reflection, no final XOR (§4.12 Table 20)."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def convert(s_t: int, s_rh: int) -> tuple[float, float]:
    """(°C, %RH) from the raw words: T = -45 + 175·S/(2¹⁶-1), RH = 100·S/(2¹⁶-1) (§4.13)."""
    return -45 + 175 * s_t / 65535, 100 * s_rh / 65535


def parse_words(data: bytes) -> list[int] | str:
    """The 16-bit words of a read (MSB, LSB, CRC each), or why they are not data."""
    if len(data) % 3:
        return f"read of {len(data)} bytes is not whole words"
    words = []
    for i in range(0, len(data), 3):
        word, crc = data[i : i + 2], data[i + 2]
        if crc8(word) != crc:
            return f"CRC mismatch in word {i // 3}: got 0x{crc:02x}, want 0x{crc8(word):02x}"
        words.append(int.from_bytes(word, "big"))
    return words


class Bus(Protocol):
    """The smbus2.SMBus methods this driver uses."""

    def i2c_rdwr(self, *i2c_msgs: smbus2.i2c_msg) -> None: ...
    def close(self) -> None: ...


class Sht31Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    bus: int = 1  # /dev/i2c-<bus>
    address: Literal[0x44, 0x45] = 0x44  # ADDR pin low / high (§3.4)


class Sht31Driver(PollingDriver):
    """Sensirion SHT3x on I²C: single-shot high-repeatability temperature and humidity."""

    name: ClassVar[str] = "sht31"
    description: ClassVar[str] = "Sensirion SHT3x temperature and humidity (I2C)"
    sensor_type: ClassVar[str] = "environment"
    Options = Sht31Options

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        self.opts: Sht31Options = ctx.options
        self._bus: Bus | None = None
        self._owns_bus = False
        self.status: int | None = None

    def open(self) -> None:
        """Open the bus and read the status register: the device must answer."""
        self._bus, self._owns_bus = open_i2c(self.ctx, self.opts.bus)
        try:
            self._command(CMD_READ_STATUS)
            words = parse_words(self._read(3))
            # A bad status CRC at open is bus noise or a different chip; say so once.
            if isinstance(words, str):
                self.reject(f"status register: {words}")
            else:
                self.status = words[0]
        except BaseException as e:
            self.close()
            if isinstance(e, OSError) and e.errno in I2C_NO_ANSWER_ERRNOS:
                raise i2c_no_answer_error(e, self.opts.bus, self.opts.address) from e
            raise

    def poll(self) -> list[Payload]:
        """Start one measurement, wait for it, read and check both words."""
        self._command(CMD_SINGLE_SHOT_HIGH)
        time.sleep(MEASURE_HIGH_S)
        for attempt in range(READ_RETRIES):
            try:
                data = self._read(6)
                break
            except OSError:
                if attempt == READ_RETRIES - 1:
                    raise
                time.sleep(RETRY_WAIT_S)
        words = parse_words(data)
        if isinstance(words, str):
            self.reject(words)
            return []
        temperature_c, humidity_pct = convert(words[0], words[1])
        if not T_RANGE_C[0] <= temperature_c <= T_RANGE_C[1]:
            self.reject(f"temperature {temperature_c:.2f} °C outside {T_RANGE_C}")
            return []
        return [{"temperature_c": temperature_c, "humidity_pct": humidity_pct}]

    def _command(self, command: int) -> None:
        assert self._bus is not None, "used before open"
        self._bus.i2c_rdwr(smbus2.i2c_msg.write(self.opts.address, command.to_bytes(2, "big")))

    def _read(self, length: int) -> bytes:
        assert self._bus is not None, "used before open"
        msg: Any = smbus2.i2c_msg.read(self.opts.address, length)
        self._bus.i2c_rdwr(msg)
        return ctypes.string_at(msg.buf, msg.len)  # ctypes fields; not in smbus2's stubs

    def close(self) -> None:
        """Close the bus if this driver opened it; never raises."""
        bus, self._bus = self._bus, None
        close_owned(bus, self._owns_bus)
        self._owns_bus = False


DRIVER = Sht31Driver
