"""Bosch BME280 temperature, humidity and pressure sensor on I²C (smbus2).

Register map and integer compensation: Bosch BME280 datasheet BST-BME280-DS002 rev 1.6,
§4.2.2 (calibration), §4.2.3 (compensation formulas), §5.3-5.4 (registers), §9.1 (timing).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

import msgspec

from pilog.drivers.base import DriverContext, Payload, PollingDriver
from pilog.drivers.transports import (
    I2C_NO_ANSWER_ERRNOS,
    close_owned,
    i2c_no_answer_error,
    open_i2c,
)
from pilog.errors import PilogError

CHIP_ID = 0x60  # §5.4.1; a BMP280 reads 0x56-0x58
REG_CALIB1, REG_CHIP_ID, REG_RESET, REG_CALIB2 = 0x88, 0xD0, 0xE0, 0xE1
REG_CTRL_HUM, REG_STATUS, REG_CTRL_MEAS, REG_CONFIG, REG_DATA = 0xF2, 0xF3, 0xF4, 0xF5, 0xF7
RESET_WORD = 0xB6  # §5.4.2
STARTUP_S = 0.002  # start-up time after power-on or reset (Table 1)
STATUS_MEASURING, STATUS_IM_UPDATE = 0x08, 0x01  # §5.4.4
SKIPPED_20BIT, SKIPPED_16BIT = 0x80000, 0x8000  # reset value / skipped channel (Table 18)
MODE_FORCED, MODE_NORMAL = 0x01, 0x03  # ctrl_meas mode[1:0] (§5.4.5)
OSRS_CODE = {0: 0, 1: 1, 2: 2, 4: 3, 8: 4, 16: 5}  # oversampling -> register code (Table 20)
FILTER_CODE = {0: 0, 2: 1, 4: 2, 8: 3, 16: 4}  # IIR coefficient -> config filter[4:2] (Table 28)
STANDBY_CODE = {0.5: 0, 62.5: 1, 125: 2, 250: 3, 500: 4, 1000: 5, 10: 6, 20: 7}  # Table 27
# Operating range (datasheet Table 1 and §1): outside it a reading is not data.
T_RANGE_C, P_RANGE_HPA = (-40.0, 85.0), (300.0, 1100.0)

Oversampling = Literal[1, 2, 4, 8, 16]
OptionalOversampling = Literal[0, 1, 2, 4, 8, 16]  # 0 skips the channel


class WrongDeviceError(PilogError):
    """The device at the address is not, or does not answer as, the chip the driver expects."""


class Bus(Protocol):
    """The smbus2.SMBus methods this driver uses."""

    def read_byte_data(self, i2c_addr: int, register: int) -> int: ...
    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None: ...
    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...
    def close(self) -> None: ...


class Bme280Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    bus: int = 1  # /dev/i2c-<bus>
    address: Literal[0x76, 0x77] = 0x76  # SDO low / high (§6.2)
    mode: Literal["forced", "normal"] = "forced"
    oversampling_temperature: Oversampling = 1
    oversampling_pressure: OptionalOversampling = 1
    oversampling_humidity: OptionalOversampling = 1
    filter: Literal[0, 2, 4, 8, 16] = 0  # IIR filter coefficient (§3.4.4)
    standby_ms: float = 1000  # normal mode only: one of STANDBY_CODE's keys

    def __post_init__(self) -> None:
        if self.standby_ms not in STANDBY_CODE:
            allowed = ", ".join(f"{v:g}" for v in sorted(STANDBY_CODE))
            raise ValueError(f"standby_ms must be one of {allowed}")


@dataclass(frozen=True)
class Calibration:
    """Trimming parameters dig_T1..dig_H6 (datasheet §4.2.2 Table 16)."""

    t1: int
    t2: int
    t3: int
    p1: int
    p2: int
    p3: int
    p4: int
    p5: int
    p6: int
    p7: int
    p8: int
    p9: int
    h1: int
    h2: int
    h3: int
    h4: int
    h5: int
    h6: int

    @classmethod
    def parse(cls, block1: bytes, block2: bytes) -> Calibration:
        """Decode registers 0x88..0xA1 (26 bytes) and 0xE1..0xE7 (7 bytes)."""

        def u16(b: bytes, i: int) -> int:
            return int.from_bytes(b[i : i + 2], "little")

        def s16(b: bytes, i: int) -> int:
            return int.from_bytes(b[i : i + 2], "little", signed=True)

        def s12(value: int) -> int:
            return value - 0x1000 if value & 0x800 else value

        # H4 = 0xE4<<4 | 0xE5[3:0], H5 = 0xE6<<4 | 0xE5[7:4]: signed 12-bit (Table 16; the
        # Bosch API casts the MSB to int8_t). Swapping the 0xE5 nibbles is a known bug elsewhere.
        e4, e5, e6 = block2[3], block2[4], block2[5]
        return cls(
            t1=u16(block1, 0),
            t2=s16(block1, 2),
            t3=s16(block1, 4),
            p1=u16(block1, 6),
            p2=s16(block1, 8),
            p3=s16(block1, 10),
            p4=s16(block1, 12),
            p5=s16(block1, 14),
            p6=s16(block1, 16),
            p7=s16(block1, 18),
            p8=s16(block1, 20),
            p9=s16(block1, 22),
            h1=block1[25],
            h2=s16(block2, 0),
            h3=block2[2],
            h4=s12(e4 << 4 | (e5 & 0x0F)),
            h5=s12(e6 << 4 | e5 >> 4),
            h6=int.from_bytes(block2[6:7], "little", signed=True),
        )


def _div(a: int, b: int) -> int:
    """C integer division (truncates toward zero), as the datasheet's int64 code uses."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def compensate_temperature(adc_t: int, cal: Calibration) -> tuple[int, int]:
    """(temperature in 0.01 °C, t_fine): BME280_compensate_T_int32 (§4.2.3)."""
    var1 = (((adc_t >> 3) - (cal.t1 << 1)) * cal.t2) >> 11
    var2 = (((((adc_t >> 4) - cal.t1) * ((adc_t >> 4) - cal.t1)) >> 12) * cal.t3) >> 14
    t_fine = var1 + var2
    return (t_fine * 5 + 128) >> 8, t_fine


def compensate_pressure(adc_p: int, t_fine: int, cal: Calibration) -> int:
    """Pressure in Pa as Q24.8 (0 when undefined): BME280_compensate_P_int64 (§4.2.3)."""
    var1 = t_fine - 128000
    var2 = var1 * var1 * cal.p6
    var2 = var2 + ((var1 * cal.p5) << 17)
    var2 = var2 + (cal.p4 << 35)
    var1 = ((var1 * var1 * cal.p3) >> 8) + ((var1 * cal.p2) << 12)
    var1 = (((1 << 47) + var1) * cal.p1) >> 33
    if var1 == 0:
        return 0  # avoids a division by zero (the datasheet's own guard)
    p = 1048576 - adc_p
    p = _div(((p << 31) - var2) * 3125, var1)
    var1 = (cal.p9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (cal.p8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (cal.p7 << 4)


def compensate_humidity(adc_h: int, t_fine: int, cal: Calibration) -> int:
    """Relative humidity in % as Q22.10, clamped to 0..100: bme280_compensate_H_int32."""
    v = t_fine - 76800
    v = ((((adc_h << 14) - (cal.h4 << 20) - (cal.h5 * v)) + 16384) >> 15) * (
        (
            ((((((v * cal.h6) >> 10) * (((v * cal.h3) >> 11) + 32768)) >> 10) + 2097152) * cal.h2)
            + 8192
        )
        >> 14
    )
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * cal.h1) >> 4)
    v = min(max(v, 0), 419430400)
    return v >> 12


class Bme280Driver(PollingDriver):
    """Bosch BME280 on I²C: temperature, humidity and pressure, forced or normal mode."""

    name: ClassVar[str] = "bme280"
    description: ClassVar[str] = "Bosch BME280 temperature, humidity and pressure (I2C)"
    sensor_type: ClassVar[str] = "environment"
    Options = Bme280Options

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        self.opts: Bme280Options = ctx.options
        self._bus: Bus | None = None
        self._owns_bus = False
        self.calibration: Calibration | None = None
        o = self.opts
        self._ctrl_hum = OSRS_CODE[o.oversampling_humidity]
        mode = MODE_FORCED if o.mode == "forced" else MODE_NORMAL
        self._ctrl_meas = (
            OSRS_CODE[o.oversampling_temperature] << 5 | OSRS_CODE[o.oversampling_pressure] << 2
        ) | mode
        self._config = STANDBY_CODE[o.standby_ms] << 5 | FILTER_CODE[o.filter] << 2
        # Maximum measurement time, datasheet §9.1 eq. 9.2 (Appendix B).
        t, p, h = o.oversampling_temperature, o.oversampling_pressure, o.oversampling_humidity
        self._measure_s = (
            1.25 + 2.3 * t + (2.3 * p + 0.575 if p else 0) + (2.3 * h + 0.575 if h else 0)
        ) / 1000

    def open(self) -> None:
        """Check the chip id, reset, read the calibration and configure the mode."""
        self._bus, self._owns_bus = open_i2c(self.ctx, self.opts.bus)
        try:
            self._setup(self._bus)
        except BaseException as e:
            self.close()
            if isinstance(e, OSError) and e.errno in I2C_NO_ANSWER_ERRNOS:
                raise i2c_no_answer_error(e, self.opts.bus, self.opts.address) from e
            raise

    def _setup(self, bus: Bus) -> None:
        addr = self.opts.address
        chip_id = bus.read_byte_data(addr, REG_CHIP_ID)
        if chip_id != CHIP_ID:
            raise WrongDeviceError(
                f"I2C {self.opts.bus}/0x{addr:02x}: chip id 0x{chip_id:02x} is not a BME280 "
                f"(0x{CHIP_ID:02x}); 0x56-0x58 is a BMP280, which has no humidity sensor"
            )
        # A soft reset puts the chip in sleep mode so the config write is not ignored (§5.4.6);
        # then wait for the NVM copy (im_update, §5.4.4) before reading the calibration.
        bus.write_byte_data(addr, REG_RESET, RESET_WORD)
        self._wait_status(bus, STATUS_IM_UPDATE, STARTUP_S, "NVM copy after reset")
        block1 = bytes(bus.read_i2c_block_data(addr, REG_CALIB1, 26))
        block2 = bytes(bus.read_i2c_block_data(addr, REG_CALIB2, 7))
        self.calibration = Calibration.parse(block1, block2)
        if self.calibration.t1 == 0 or self.calibration.p1 == 0:
            raise WrongDeviceError(
                f"I2C {self.opts.bus}/0x{addr:02x}: calibration dig_T1/dig_P1 read as zero"
            )
        bus.write_byte_data(addr, REG_CONFIG, self._config)
        if self.opts.mode == "normal":
            self._start(bus)  # runs on its own; wait for the first result
            self._wait_status(bus, STATUS_MEASURING, self._measure_s, "first measurement")

    def _start(self, bus: Bus) -> None:
        # ctrl_hum takes effect only with the following ctrl_meas write (§5.4.3).
        bus.write_byte_data(self.opts.address, REG_CTRL_HUM, self._ctrl_hum)
        bus.write_byte_data(self.opts.address, REG_CTRL_MEAS, self._ctrl_meas)

    def _wait_status(self, bus: Bus, bit: int, wait_s: float, what: str) -> None:
        time.sleep(wait_s)
        for _ in range(10):
            if not bus.read_byte_data(self.opts.address, REG_STATUS) & bit:
                return
            time.sleep(0.001)
        raise TimeoutError(f"BME280 at 0x{self.opts.address:02x}: {what} did not finish")

    def poll(self) -> list[Payload]:
        """Measure (forced mode) or read the latest measurement (normal mode)."""
        bus, cal = self._bus, self.calibration
        assert bus is not None, "poll before open"
        assert cal is not None, "open reads the calibration"
        if self.opts.mode == "forced":
            self._start(bus)
            self._wait_status(bus, STATUS_MEASURING, self._measure_s, "measurement")
        # One burst read of 0xF7..0xFE so all values come from one measurement (§4).
        d = bus.read_i2c_block_data(self.opts.address, REG_DATA, 8)
        adc_p = d[0] << 12 | d[1] << 4 | d[2] >> 4
        adc_t = d[3] << 12 | d[4] << 4 | d[5] >> 4
        adc_h = d[6] << 8 | d[7]
        payload = self._compensate(adc_t, adc_p, adc_h, cal)
        return [] if payload is None else [payload]

    def _compensate(self, adc_t: int, adc_p: int, adc_h: int, cal: Calibration) -> Payload | None:
        if adc_t == SKIPPED_20BIT:
            self.reject("no temperature measurement (data registers hold their reset value)")
            return None
        centi_c, t_fine = compensate_temperature(adc_t, cal)
        temperature_c = centi_c / 100
        if not T_RANGE_C[0] <= temperature_c <= T_RANGE_C[1]:
            self.reject(f"temperature {temperature_c} °C outside {T_RANGE_C}")
            return None
        payload: Payload = {"temperature_c": temperature_c}
        if self.opts.oversampling_pressure:
            pressure_hpa = compensate_pressure(adc_p, t_fine, cal) / 256 / 100
            if adc_p == SKIPPED_20BIT or not P_RANGE_HPA[0] <= pressure_hpa <= P_RANGE_HPA[1]:
                self.reject(f"pressure {pressure_hpa} hPa outside {P_RANGE_HPA}")
                return None
            payload["pressure_hpa"] = pressure_hpa
        if self.opts.oversampling_humidity:
            if adc_h == SKIPPED_16BIT:
                self.reject("no humidity measurement (data register holds its reset value)")
                return None
            payload["humidity_pct"] = compensate_humidity(adc_h, t_fine, cal) / 1024
        return payload

    def close(self) -> None:
        """Put the chip to sleep and close the bus if this driver opened it; never raises."""
        bus, self._bus = self._bus, None
        if bus is None:
            return
        if self.opts.mode == "normal":
            with contextlib.suppress(OSError):
                bus.write_byte_data(self.opts.address, REG_CTRL_MEAS, 0)  # back to sleep
        close_owned(bus, self._owns_bus)
        self._owns_bus = False


DRIVER = Bme280Driver
