"""A fake I²C bus with the smbus2.SMBus surface, backed by datasheet device simulators.

`FakeSMBus` turns each SMBus call into the I²C transactions the kernel would put on the wire
(a register write, then a repeated-start read) and hands them to the simulator registered at
the address. An address with no simulator raises `OSError(121, 'Remote I/O error')`, as the
Linux I²C drivers do when nobody acknowledges; so does a simulator that NACKs (`Nack`).

Simulators implement `I2cDevice`: `write(data)` receives the bytes of one write transaction
and `read(length)` returns the bytes of one read transaction.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol

from smbus2 import i2c_msg

I2C_SMBUS_BLOCK_MAX = 32  # the SMBus block limit smbus2 enforces (linux/i2c.h)
I2C_M_RD = 0x0001  # i2c_msg flag of a read (linux/i2c.h)
MonoNs = Callable[[], int]


class Nack(Exception):
    """Raised by a simulator that does not acknowledge a transaction."""


class I2cDevice(Protocol):
    """A device on the bus: one call per I²C transaction addressed to it.

    Either method raises `Nack` to refuse the transaction (not ready, unknown command).
    """

    def write(self, data: bytes) -> None: ...
    def read(self, length: int) -> bytes: ...


def _nack_error() -> OSError:
    return OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))


class FakeSMBus:
    """The smbus2.SMBus methods pilog's drivers use, over simulated devices by address."""

    def __init__(self, devices: Mapping[int, I2cDevice] | None = None, bus: int = 1) -> None:
        self.bus = bus
        self.devices: dict[int, I2cDevice] = dict(devices or {})
        self.closed = False
        # One transfer at a time, a register write and its repeated-start read together, as
        # the kernel serialises an adapter's transfers between threads.
        self._lock = threading.RLock()
        # Every transaction as ("w" | "r", address, bytes), for tests of the wire protocol.
        self.transactions: list[tuple[str, int, bytes]] = []

    def attach(self, address: int, device: I2cDevice) -> None:
        """Plug `device` in at `address`."""
        self.devices[address] = device

    def detach(self, address: int) -> None:
        """Unplug the device at `address`: it NACKs from now on."""
        self.devices.pop(address, None)

    # -- wire level ------------------------------------------------------------------------

    def _device(self, address: int) -> I2cDevice:
        if self.closed:
            raise OSError(errno.EBADF, "FakeSMBus is closed")
        device = self.devices.get(address)
        if device is None:
            raise _nack_error()
        return device

    def _write(self, address: int, data: bytes) -> None:
        device = self._device(address)
        self.transactions.append(("w", address, data))
        try:
            device.write(data)
        except Nack:
            raise _nack_error() from None

    def _read(self, address: int, length: int) -> bytes:
        device = self._device(address)
        try:
            data = device.read(length)
        except Nack:
            raise _nack_error() from None
        assert len(data) == length, "a simulator returns exactly the bytes asked for"
        self.transactions.append(("r", address, data))
        return data

    # -- smbus2.SMBus surface --------------------------------------------------------------

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        """Read one byte from `register`."""
        with self._lock:
            self._write(i2c_addr, bytes([register]))
            return self._read(i2c_addr, 1)[0]

    def write_byte_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        """Write one byte to `register`."""
        with self._lock:
            self._write(i2c_addr, bytes([register, value]))

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        """Read `length` bytes starting at `register`."""
        if length > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Desired block length over {I2C_SMBUS_BLOCK_MAX} bytes")
        with self._lock:
            self._write(i2c_addr, bytes([register]))
            return list(self._read(i2c_addr, length))

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: Iterable[int], force: bool | None = None
    ) -> None:
        """Write `data` after the byte `register`."""
        payload = bytes(data)
        if len(payload) > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {I2C_SMBUS_BLOCK_MAX} bytes")
        with self._lock:
            self._write(i2c_addr, bytes([register]) + payload)

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        """Run smbus2.i2c_msg reads and writes in order; reads fill their message buffers."""
        with self._lock:
            for msg in i2c_msgs:
                m: Any = msg  # the ctypes fields (addr, flags, len, buf) are not in smbus2's stubs
                if m.flags & I2C_M_RD:
                    data = self._read(m.addr, m.len)
                    ctypes.memmove(m.buf, data, m.len)
                else:
                    self._write(m.addr, ctypes.string_at(m.buf, m.len))

    def close(self) -> None:
        """Close the bus; later calls raise OSError(EBADF)."""
        self.closed = True

    def __enter__(self) -> FakeSMBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()


# -- Bosch BME280 ----------------------------------------------------------------------------

BME280_CHIP_ID = 0x60
BME280_RESET_WORD = 0xB6
_REG_CALIB1, _REG_CHIP_ID, _REG_RESET, _REG_CALIB2 = 0x88, 0xD0, 0xE0, 0xE1
_REG_CTRL_HUM, _REG_STATUS, _REG_CTRL_MEAS, _REG_CONFIG, _REG_DATA = 0xF2, 0xF3, 0xF4, 0xF5, 0xF7
_SKIPPED_20BIT, _SKIPPED_16BIT = 0x80000, 0x8000  # datasheet §5.4.7-5.4.9, Table 18 reset values
_OVERSAMPLING = {0: 0, 1: 1, 2: 2, 3: 4, 4: 8, 5: 16, 6: 16, 7: 16}  # §5.4.3-5.4.5
_NVM_COPY_NS = 2_000_000  # start-up time after reset, datasheet Table 1 (2 ms)


def bme280_measure_ns(osrs_t: int, osrs_p: int, osrs_h: int, *, typical: bool = True) -> int:
    """Measurement time for the oversampling register codes (datasheet §9.1, Appendix B)."""
    t, p, h = (_OVERSAMPLING[osrs_t], _OVERSAMPLING[osrs_p], _OVERSAMPLING[osrs_h])
    if typical:
        ms = 1 + 2 * t + (2 * p + 0.5 if p else 0) + (2 * h + 0.5 if h else 0)
    else:
        ms = 1.25 + 2.3 * t + (2.3 * p + 0.575 if p else 0) + (2.3 * h + 0.575 if h else 0)
    return int(ms * 1_000_000)


class Bme280Sim:
    """A BME280 register map (datasheet §5.3-5.4): chip id, calibration, controls, data.

    Reads auto-increment the register address (§6.2.2); writes are register/value pairs
    (§6.2.1). Forced mode measures once and returns to sleep; data registers hold the reset
    value 0x80000/0x8000 until a measurement completes, and skipped channels read the same.
    The IIR filter and standby time are accepted and stored, not simulated.
    """

    def __init__(
        self,
        calib_88_a1: bytes,
        calib_e1_e7: bytes,
        adc: tuple[int, int, int],
        *,
        chip_id: int = BME280_CHIP_ID,
        clock: MonoNs = time.monotonic_ns,
    ) -> None:
        assert len(calib_88_a1) == 26, "0x88..0xA1 (datasheet §4.2.2 Table 16)"
        assert len(calib_e1_e7) == 7, "0xE1..0xE7 (datasheet §4.2.2 Table 16)"
        self._clock = clock
        self.regs = bytearray(256)
        self.regs[_REG_CHIP_ID] = chip_id
        self.regs[_REG_CALIB1 : _REG_CALIB1 + 26] = calib_88_a1
        self.regs[_REG_CALIB2 : _REG_CALIB2 + 7] = calib_e1_e7
        self.adc_t, self.adc_p, self.adc_h = adc
        self._pointer = 0
        self._osrs_h = 0  # ctrl_hum as latched by the last ctrl_meas write (§5.4.3)
        self._measure_done_ns: int | None = None
        self._nvm_done_ns = 0
        self._reset_registers()

    @classmethod
    def from_vector(
        cls, vector: Mapping[str, Any], *, clock: MonoNs = time.monotonic_ns
    ) -> Bme280Sim:
        """A simulator with the registers of a `bme280_vectors.json` vector."""
        regs = vector["registers"]
        data = bytes.fromhex(regs["data_0xF7_0xFE_hex"])
        return cls(
            bytes.fromhex(regs["calib_0x88_0xA1_hex"]),
            bytes.fromhex(regs["calib_0xE1_0xE7_hex"]),
            (
                data[3] << 12 | data[4] << 4 | data[5] >> 4,
                data[0] << 12 | data[1] << 4 | data[2] >> 4,
                data[6] << 8 | data[7],
            ),
            chip_id=int(regs["chip_id_0xD0"], 16),
            clock=clock,
        )

    def set_adc(self, adc_t: int, adc_p: int, adc_h: int) -> None:
        """Raw ADC values the next measurements produce (20, 20 and 16 bits)."""
        self.adc_t, self.adc_p, self.adc_h = adc_t, adc_p, adc_h

    # -- I2cDevice --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """A register address alone (before a read), or register/value pairs."""
        self._update()
        if data:
            self._pointer = data[0]
        for i in range(0, len(data) - 1, 2):
            self._write_register(data[i], data[i + 1])

    def read(self, length: int) -> bytes:
        """Bytes from the register pointer on, auto-incrementing."""
        self._update()
        now = self._clock()
        measuring = self._measure_done_ns is not None and now < self._measure_done_ns
        status = (0x08 if measuring else 0) | (0x01 if now < self._nvm_done_ns else 0)
        self.regs[_REG_STATUS] = status  # measuring[3], im_update[0] (§5.4.4)
        start = self._pointer
        out = bytes(self.regs[(start + i) & 0xFF] for i in range(length))
        self._pointer = (start + length) & 0xFF
        return out

    # -- internals -----------------------------------------------------------------------------

    def _reset_registers(self) -> None:
        for reg in (_REG_CTRL_HUM, _REG_STATUS, _REG_CTRL_MEAS, _REG_CONFIG):
            self.regs[reg] = 0
        self._osrs_h = 0
        self._measure_done_ns = None
        self.regs[_REG_DATA : _REG_DATA + 8] = bytes([0x80, 0, 0, 0x80, 0, 0, 0x80, 0])

    def _write_register(self, reg: int, value: int) -> None:
        mode = self.regs[_REG_CTRL_MEAS] & 0x03
        if reg == _REG_RESET and value == BME280_RESET_WORD:
            self._reset_registers()
            self._nvm_done_ns = self._clock() + _NVM_COPY_NS
        elif reg == _REG_CTRL_HUM:
            self.regs[reg] = value & 0x07
        elif reg == _REG_CONFIG and mode != 0x03:  # ignored in normal mode (§5.4.6)
            self.regs[reg] = value & 0xFD
        elif reg == _REG_CTRL_MEAS:
            self.regs[reg] = value
            self._osrs_h = self.regs[_REG_CTRL_HUM]
            if value & 0x03:  # forced (01, 10) or normal (11) starts a measurement (§3.3)
                osrs = (value >> 5, (value >> 2) & 0x07, self._osrs_h)
                self._measure_done_ns = self._clock() + bme280_measure_ns(*osrs)
            else:
                self._measure_done_ns = None

    def _update(self) -> None:
        if self._measure_done_ns is None or self._clock() < self._measure_done_ns:
            return
        ctrl = self.regs[_REG_CTRL_MEAS]
        t = self.adc_t if ctrl >> 5 else _SKIPPED_20BIT
        p = self.adc_p if (ctrl >> 2) & 0x07 else _SKIPPED_20BIT
        h = self.adc_h if self._osrs_h else _SKIPPED_16BIT
        self.regs[_REG_DATA : _REG_DATA + 8] = bytes(
            (p >> 12, (p >> 4) & 0xFF, (p & 0x0F) << 4, t >> 12, (t >> 4) & 0xFF, (t & 0x0F) << 4)
        ) + bytes((h >> 8, h & 0xFF))
        if ctrl & 0x03 == 0x03:
            return  # normal mode keeps measuring; data stays fresh (standby not simulated)
        self.regs[_REG_CTRL_MEAS] = ctrl & 0xFC  # forced mode returns to sleep (§3.3.3)
        self._measure_done_ns = None


# -- Sensirion SHT3x -------------------------------------------------------------------------

SHT31_STATUS_AFTER_RESET = 0x8010  # alert pending, reset detected (datasheet Table 18)
# Single-shot commands (datasheet Table 9) and their typical duration (§2.2 Table 4);
# the clock-stretching ones hold SCL until done, so their result is ready at once.
_SINGLE_SHOT_NS = {
    0x2400: 12_500_000,
    0x240B: 4_500_000,
    0x2416: 2_500_000,
    0x2C06: 0,
    0x2C0D: 0,
    0x2C10: 0,
}
_CMD_READ_STATUS, _CMD_CLEAR_STATUS, _CMD_SOFT_RESET = 0xF32D, 0x3041, 0x30A2
_CMD_HEATER_ON, _CMD_HEATER_OFF, _CMD_BREAK = 0x306D, 0x3066, 0x3093


def sht31_crc8(data: bytes) -> int:
    """CRC-8, polynomial 0x31, init 0xFF, no reflection (datasheet §4.12 Table 20)."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def sht31_word(value: int) -> bytes:
    """A 16-bit word as the sensor sends it: MSB, LSB, CRC."""
    word = value.to_bytes(2, "big")
    return word + bytes([sht31_crc8(word)])


class Sht31Sim:
    """An SHT3x-DIS answering 16-bit commands (datasheet §4): single shot, status, reset.

    A measurement's read header is NACKed until it has finished (§4.4, no clock stretching);
    the result can be read once. `raw` (6 bytes) is served verbatim when given, so vectors with
    bad CRCs can be replayed; otherwise the words are built from `s_t` and `s_rh`.
    `corrupt_crc` flips the temperature CRC of every later reading.
    """

    def __init__(
        self,
        s_t: int = 0x623C,
        s_rh: int = 0x6DDF,
        *,
        raw: bytes | None = None,
        clock: MonoNs = time.monotonic_ns,
    ) -> None:
        assert raw is None or len(raw) == 6, "a reading is 6 bytes (datasheet §4.4)"
        self.s_t, self.s_rh, self.raw = s_t, s_rh, raw
        self.corrupt_crc = False
        self.status = SHT31_STATUS_AFTER_RESET
        self.commands: list[int] = []
        self._clock = clock
        self._ready_ns = 0
        self._pending: bytes | None = None

    @classmethod
    def from_vector(cls, read: Mapping[str, Any], *, clock: MonoNs = time.monotonic_ns) -> Sht31Sim:
        """A simulator replaying one entry of `sht31_vectors.json`'s "reads"."""
        return cls(raw=bytes(read["bytes"]), clock=clock)

    def write(self, data: bytes) -> None:
        """One command (MSB first), optionally followed by argument words."""
        if len(data) < 2:
            raise Nack  # a half command is not acknowledged
        command = int.from_bytes(data[:2], "big")
        self.commands.append(command)
        self._pending = None
        if command in _SINGLE_SHOT_NS:
            self._pending = self._reading()
            self._ready_ns = self._clock() + _SINGLE_SHOT_NS[command]
        elif command == _CMD_READ_STATUS:
            self._pending = sht31_word(self.status)
            self._ready_ns = 0
        elif command == _CMD_CLEAR_STATUS:
            self.status &= ~0x8C10  # alert, RH/T alert and reset flags (Table 18)
        elif command == _CMD_SOFT_RESET:
            self.status = SHT31_STATUS_AFTER_RESET
        elif command == _CMD_HEATER_ON:
            self.status |= 0x2000
        elif command == _CMD_HEATER_OFF:
            self.status &= ~0x2000
        elif command != _CMD_BREAK:
            self.status |= 0x0002  # "last command not processed" (Table 18)
            return
        self.status &= ~0x0002

    def read(self, length: int) -> bytes:
        """The pending result; NACK when there is none or it is not ready yet."""
        if self._pending is None or self._clock() < self._ready_ns:
            raise Nack
        out, self._pending = self._pending, None
        return out[:length].ljust(length, b"\xff")  # the master reads 0xFF past the end

    def _reading(self) -> bytes:
        out = bytearray(self.raw or sht31_word(self.s_t) + sht31_word(self.s_rh))
        if self.corrupt_crc:
            out[2] ^= 0xFF
        return bytes(out)
