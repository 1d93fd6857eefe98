"""FakeSMBus keeps smbus2.SMBus's surface and the simulators keep their datasheets' rules."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
import smbus2

from pilog.testing.smbus import (
    Bme280Sim,
    FakeSMBus,
    Sht31Sim,
    bme280_measure_ns,
    sht31_crc8,
    sht31_word,
)

CALIB1 = bytes(range(1, 27))
CALIB2 = bytes(range(0x40, 0x47))
ADC = (0x82F30, 0x45594, 0x896D)  # temperature, pressure, humidity


class Clock:
    """Monotonic ns moved only by the test."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def _bme(clock: Callable[[], int] | None = None) -> tuple[FakeSMBus, Bme280Sim]:
    device = Bme280Sim(CALIB1, CALIB2, ADC, clock=clock or Clock())
    return FakeSMBus({0x76: device}), device


@pytest.mark.parametrize(
    "call",
    [
        lambda bus: bus.read_byte_data(0x10, 0),
        lambda bus: bus.write_byte_data(0x10, 0, 1),
        lambda bus: bus.read_i2c_block_data(0x10, 0, 4),
        lambda bus: bus.write_i2c_block_data(0x10, 0, [1, 2]),
        lambda bus: bus.i2c_rdwr(smbus2.i2c_msg.read(0x10, 2)),
    ],
)
def test_absent_address_raises_remote_io_error_as_linux_does(
    call: Callable[[FakeSMBus], object],
) -> None:
    with pytest.raises(OSError, match="Remote I/O error") as info:
        call(FakeSMBus())
    assert info.value.errno == errno.EREMOTEIO == 121


def test_blocks_over_32_bytes_are_refused_as_smbus2_does() -> None:
    bus, _ = _bme()
    with pytest.raises(ValueError, match="over 32"):
        bus.read_i2c_block_data(0x76, 0x88, 33)
    with pytest.raises(ValueError, match="exceed 32"):
        bus.write_i2c_block_data(0x76, 0x88, bytes(33))


def test_closed_bus_refuses_calls_and_context_manager_closes() -> None:
    bus, _ = _bme()
    with bus as same:
        assert same.read_byte_data(0x76, 0xD0) == 0x60
    with pytest.raises(OSError, match="closed") as info:
        bus.read_byte_data(0x76, 0xD0)
    assert info.value.errno == errno.EBADF


def test_i2c_rdwr_fills_read_messages_and_sends_writes() -> None:
    bus, _ = _bme()
    write, read = smbus2.i2c_msg.write(0x76, [0x88]), smbus2.i2c_msg.read(0x76, 4)
    bus.i2c_rdwr(write, read)
    assert list(read) == list(CALIB1[:4])
    assert bus.transactions == [("w", 0x76, b"\x88"), ("r", 0x76, CALIB1[:4])]


def test_bme280_reads_auto_increment_across_the_register_map() -> None:
    bus, _ = _bme()
    assert bus.read_byte_data(0x76, 0xD0) == 0x60
    assert bytes(bus.read_i2c_block_data(0x76, 0x88, 26)) == CALIB1
    assert bytes(bus.read_i2c_block_data(0x76, 0xE1, 7)) == CALIB2


def test_bme280_data_holds_reset_values_until_a_forced_measurement_completes() -> None:
    clock = Clock()
    bus, device = _bme(clock)
    reset = bytes([0x80, 0, 0, 0x80, 0, 0, 0x80, 0])
    assert bytes(bus.read_i2c_block_data(0x76, 0xF7, 8)) == reset
    bus.write_byte_data(0x76, 0xF2, 0x01)
    bus.write_byte_data(0x76, 0xF4, 0b001_001_01)
    assert bus.read_byte_data(0x76, 0xF3) & 0x08  # measuring
    assert bytes(bus.read_i2c_block_data(0x76, 0xF7, 8)) == reset
    clock.now += bme280_measure_ns(1, 1, 1)
    assert bus.read_byte_data(0x76, 0xF3) == 0
    assert bytes(bus.read_i2c_block_data(0x76, 0xF7, 8)) == bytes.fromhex("45594082f300896d")
    assert device.regs[0xF4] & 0x03 == 0  # back to sleep


def test_bme280_ctrl_hum_takes_effect_only_after_ctrl_meas() -> None:
    clock = Clock()
    bus, _ = _bme(clock)
    bus.write_byte_data(0x76, 0xF4, 0b001_001_01)  # forced, humidity oversampling still 0
    bus.write_byte_data(0x76, 0xF2, 0x01)  # too late for this measurement (§5.4.3)
    clock.now += bme280_measure_ns(1, 1, 1)
    assert bus.read_i2c_block_data(0x76, 0xFD, 2) == [0x80, 0x00]  # skipped


def test_bme280_config_writes_are_ignored_in_normal_mode() -> None:
    bus, device = _bme()
    bus.write_byte_data(0x76, 0xF5, 0x10)
    bus.write_byte_data(0x76, 0xF4, 0b001_001_11)
    bus.write_byte_data(0x76, 0xF5, 0xA0)
    assert device.regs[0xF5] == 0x10


def test_bme280_writes_are_register_value_pairs_and_reset_restores_defaults() -> None:
    bus, device = _bme()
    bus.write_i2c_block_data(0x76, 0xF2, [0x05, 0xF4, 0x24])
    assert (device.regs[0xF2], device.regs[0xF4]) == (0x05, 0x24)
    bus.write_byte_data(0x76, 0xE0, 0xB6)
    assert (device.regs[0xF2], device.regs[0xF4]) == (0, 0)
    assert bus.read_byte_data(0x76, 0xF3) & 0x01  # im_update while the NVM is copied


def test_sht31_crc_matches_the_datasheet_example() -> None:
    assert sht31_crc8(b"\xbe\xef") == 0x92  # SHT3x-DIS datasheet Table 20
    assert sht31_word(0x8010) == b"\x80\x10\xe1"


def test_sht31_read_is_nacked_until_the_measurement_is_done_and_served_once() -> None:
    clock = Clock()
    bus = FakeSMBus({0x44: Sht31Sim(0x623C, 0x6DDF, clock=clock)})
    bus.i2c_rdwr(smbus2.i2c_msg.write(0x44, [0x24, 0x00]))
    with pytest.raises(OSError, match="Remote I/O error"):
        bus.i2c_rdwr(smbus2.i2c_msg.read(0x44, 6))
    clock.now += 12_500_000
    msg = smbus2.i2c_msg.read(0x44, 6)
    bus.i2c_rdwr(msg)
    assert bytes(list(msg)) == bytes.fromhex("623cb56ddfbe")
    with pytest.raises(OSError, match="Remote I/O error"):
        bus.i2c_rdwr(smbus2.i2c_msg.read(0x44, 6))


def test_sht31_commands_change_the_status_register() -> None:
    device = Sht31Sim()
    device.write(b"\x30\x6d")  # heater on
    device.write(b"\x30\x41")  # clear status
    assert device.status == 0x2000
    device.write(b"\x12\x34")  # not a command
    assert device.status & 0x0002
    device.write(b"\x30\xa2")  # soft reset
    assert device.status == 0x8010
    with pytest.raises(OSError, match="Remote I/O error"):
        FakeSMBus({0x44: device}).i2c_rdwr(smbus2.i2c_msg.write(0x44, [0x24]))


def test_sht31_corrupt_crc_flips_the_temperature_crc() -> None:
    device = Sht31Sim(0x623C, 0x6DDF)
    device.corrupt_crc = True
    device.write(b"\x2c\x06")  # clock stretching: ready at once
    data = device.read(6)
    assert data[2] != sht31_crc8(data[0:2])
    assert data[5] == sht31_crc8(data[3:5])
