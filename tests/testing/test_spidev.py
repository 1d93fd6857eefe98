"""FakeSpiDev against the real spidev module's behaviour, and Mcp3008Sim against the datasheet."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import CORPUS

from pilog.testing.spidev import FakeSpiDev, Mcp3008Sim

VECTORS_FILE = CORPUS / "mcp3008_vectors.json"


@pytest.fixture
def vectors() -> list[dict[str, Any]]:
    if not VECTORS_FILE.is_file():
        pytest.skip(f"corpus file {VECTORS_FILE} absent (set PILOG_CORPUS to the corpus dir)")
    loaded: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["vectors"]
    return loaded


def _hex(text: str) -> list[int]:
    return list(bytes.fromhex(text))


def _real() -> Any:
    spidev = pytest.importorskip("spidev", reason="spidev (Linux only) is not installed")
    if Path("/dev/spidev9.9").exists():
        pytest.skip("this machine has a /dev/spidev9.9")
    return spidev.SpiDev()


def _fake() -> FakeSpiDev:
    return FakeSpiDev({(0, 0): Mcp3008Sim()})


BOTH: list[Callable[[], Any]] = [_real, _fake]


# -- the fake behaves as the real module does without a device ------------------------------


@pytest.mark.parametrize("make", BOTH, ids=["real", "fake"])
def test_opening_an_absent_device_raises_file_not_found(make: Callable[[], Any]) -> None:
    with pytest.raises(FileNotFoundError) as info:
        make().open(9, 9)
    assert info.value.errno == errno.ENOENT


@pytest.mark.parametrize("make", BOTH, ids=["real", "fake"])
def test_transfers_and_settings_on_a_closed_device_raise_ebadf(make: Callable[[], Any]) -> None:
    spi = make()
    for attempt in (
        lambda: spi.xfer2([1, 0x80, 0]),
        lambda: spi.xfer([1]),
        lambda: setattr(spi, "max_speed_hz", 1_000_000),
        lambda: setattr(spi, "mode", 0),
    ):
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            attempt()
        assert info.value.errno == errno.EBADF
    spi.close()
    spi.close()  # closing a closed device is harmless


def test_open_then_close_and_context_manager() -> None:
    spi = _fake()
    with spi:
        spi.open(0, 0)
        spi.max_speed_hz, spi.mode = 1_000_000, 3
        assert (spi.max_speed_hz, spi.mode, spi.bits_per_word) == (1_000_000, 3, 8)
        assert spi.xfer2([0x01, 0x80, 0x00]) == [0, 0, 0]
    with pytest.raises(OSError, match="Bad file descriptor"):
        spi.xfer2([0])


def test_bytes_outside_0_255_are_refused() -> None:
    spi = _fake()
    spi.open(0, 0)
    with pytest.raises(OverflowError):
        spi.xfer2([0x100])
    with pytest.raises(TypeError):
        spi.mode = 4


# -- the simulator on the wire: every corpus vector, both alignments -------------------------


def test_every_vector_in_both_alignments_and_both_floating_levels(
    vectors: list[dict[str, Any]],
) -> None:
    for v in vectors:
        adc = Mcp3008Sim(vref=3.3, floating=v["dout_before_null_bit"])
        adc.set_code(v["channel"], v["value"])
        spi = FakeSpiDev({(0, 0): adc})
        spi.open(0, 0)
        for alignment in ("datasheet_alignment", "start_bit_first_alignment"):
            wire = v[alignment]
            assert spi.xfer2(_hex(wire["tx"])) == _hex(wire["rx"]), (alignment, v)


def test_every_code_round_trips_through_set_code() -> None:
    adc = Mcp3008Sim(vref=3.3)
    spi = FakeSpiDev({(0, 0): adc})
    spi.open(0, 0)
    for code in range(1024):
        adc.set_code(6, code)
        rx = spi.xfer2([0x01, 0xE0, 0x00])
        assert ((rx[1] & 3) << 8) | rx[2] == code
    assert adc.conversions == 1024


@pytest.mark.parametrize(
    ("volts", "code"),
    [
        (0.0, 0),
        (-0.2, 0),
        (1.65, 512),
        (3.3 * 100.9 / 1024, 100),  # floored, not rounded
        (3.3 * 1022.5 / 1024, 1022),
        (3.3, 1023),
        (4.0, 1023),
    ],
)
def test_equation_4_1_code_is_1024_vin_over_vref_saturating(volts: float, code: int) -> None:
    adc = Mcp3008Sim(vref=3.3)
    adc.set_voltage(0, volts)
    assert adc.code(True, 0) == code


def test_leading_zeros_are_ignored_and_lsb_first_repeat_then_zeros_follow() -> None:
    adc = Mcp3008Sim(vref=3.3)
    adc.set_code(3, 0b1011001110)
    spi = FakeSpiDev({(0, 0): adc})
    spi.open(0, 0)
    # Start bit on the 8th clock of the second byte: the answer shifts by 8 clocks (§6.1).
    tx = [0x00, 0x01, 0xB0, 0x00, 0x00, 0x00, 0x00]
    rx = spi.xfer2(tx)
    bits = "".join(f"{b:08b}" for b in rx)
    start = 15
    assert bits[start + 6] == "0"  # null bit
    assert bits[start + 7 : start + 17] == "1011001110"  # B9..B0
    assert bits[start + 17 : start + 26] == "1011001110"[-2::-1]  # B1..B9
    assert set(bits[start + 26 :]) == {"0"}


def test_xfer_releases_chip_select_between_bytes_and_each_byte_starts_afresh() -> None:
    adc = Mcp3008Sim(vref=3.3, floating=1)
    adc.set_code(0, 5)
    spi = FakeSpiDev({(0, 0): adc})
    spi.open(0, 0)
    # 0x01: the start bit comes on the last clock, then CS rises: DOUT only ever floats.
    # 0x80: a start bit, then SGL/DIFF=0 D=000 (CH0-CH1), sample, null bit, B9 = 0.
    # 0x00: no start bit at all.
    assert spi.xfer([0x01, 0x80, 0x00]) == [0xFF, 0b1111_1100, 0xFF]
    assert spi.xfer2([0x01, 0x80, 0x00]) == [0xFF, 0xF8, 0x05]
    assert spi.transfers[0][0] == [0x01, 0x80, 0x00]


def test_differential_pairs_follow_table_5_2() -> None:
    adc = Mcp3008Sim(vref=2.048)
    adc.set_voltage(4, 1.5)
    adc.set_voltage(5, 0.5)
    assert adc.code(False, 4) == 500  # IN+ = CH4, IN- = CH5: 1024 * 1.0 / 2.048
    assert adc.code(False, 5) == 0  # IN+ = CH5 below IN- = CH4
    assert adc.code(True, 5) == 250


def test_mcp3004_ignores_d2_and_has_four_inputs() -> None:
    adc = Mcp3008Sim(vref=3.3, inputs=4)
    adc.set_code(1, 77)
    assert adc.code(True, 0b101) == 77
    with pytest.raises(ValueError, match="MCP3004 has 4"):
        Mcp3008Sim(inputs=6)
    with pytest.raises(ValueError, match="10 bits"):
        adc.set_code(0, 1024)
