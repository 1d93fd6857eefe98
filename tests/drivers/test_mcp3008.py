"""The mcp3008 driver against the datasheet vectors, through FakeSpiDev and the real spidev."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import CORPUS

from pilog.drivers.mcp3008.driver import Mcp3008Driver, decode, request
from pilog.errors import ConfigError
from pilog.testing.drivers import open_driver, run_driver
from pilog.testing.spidev import FakeSpiDev, Mcp3008Sim, StuckBus

VECTORS_FILE = CORPUS / "mcp3008_vectors.json"


@pytest.fixture
def vectors() -> list[dict[str, Any]]:
    if not VECTORS_FILE.is_file():
        pytest.skip(f"corpus file {VECTORS_FILE} absent (set PILOG_CORPUS to the corpus dir)")
    loaded: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["vectors"]
    assert len(loaded) == 14
    return loaded


def _hex(text: str) -> list[int]:
    return list(bytes.fromhex(text))


def _adc(codes: dict[int, int], floating: int = 0) -> Mcp3008Sim:
    adc = Mcp3008Sim(vref=3.3, floating=floating)
    for channel, code in codes.items():
        adc.set_code(channel, code)
    return adc


# -- the decoder against the vectors -------------------------------------------------------


def test_request_is_each_vectors_tx(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        assert request(True, v["channel"]) == _hex(v["datasheet_alignment"]["tx"]), v


def test_decode_of_each_vectors_rx_is_its_code(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        assert decode(_hex(v["datasheet_alignment"]["rx"])) == v["value"], v


def test_driver_sends_each_vectors_tx_and_reads_its_code_and_volts(
    vectors: list[dict[str, Any]],
) -> None:
    for v in vectors:
        ch = v["channel"]
        spi = FakeSpiDev({(0, 0): _adc({ch: v["value"]}, floating=v["dout_before_null_bit"])})
        readings = run_driver("mcp3008", {"channels": [ch], "vref": 3.3}, spidev=spi, polls=1)
        wire = v["datasheet_alignment"]
        assert spi.transfers == [(_hex(wire["tx"]), _hex(wire["rx"]))], v
        assert readings == [
            {f"ch{ch}_raw": v["value"], f"ch{ch}_v": pytest.approx(v["voltage_at_vref_3v3"])}
        ], v


# -- options: channels, scaling, differential ----------------------------------------------


def test_only_the_chosen_channels_are_read_in_order() -> None:
    spi = FakeSpiDev({(1, 1): _adc({2: 200, 5: 500, 7: 700})})
    readings = run_driver("mcp3008", {"bus": 1, "device": 1, "channels": [5, 2]}, spidev=spi)
    assert readings == [{"ch5_raw": 500, "ch2_raw": 200}] * 3
    assert [tx[1] for tx, _ in spi.transfers] == [0xD0, 0xA0] * 3  # SGL=1, D=5 then D=2


def test_default_is_all_eight_channels_without_volts() -> None:
    codes = {ch: 100 * ch + 3 for ch in range(8)}
    (reading,) = run_driver("mcp3008", {}, spidev=FakeSpiDev({(0, 0): _adc(codes)}), polls=1)
    assert reading == {f"ch{ch}_raw": code for ch, code in codes.items()}


@pytest.mark.parametrize(
    ("vref", "volts_in", "code", "volts_out"),
    [
        (3.3, 0.0, 0, 0.0),
        (3.3, 1.65, 512, 512 * 3.3 / 1023),  # Equation 4-1: 1024 * VIN / VREF
        (5.0, 5.0, 1023, 5.0),  # saturates at 3FFh, which reads as vref
        (5.0, 6.0, 1023, 5.0),
        (2.5, 1.0, 409, 409 * 2.5 / 1023),
    ],
)
def test_volts_scale_codes_by_vref_over_1023(
    vref: float, volts_in: float, code: int, volts_out: float
) -> None:
    adc = Mcp3008Sim(vref=vref)
    adc.set_voltage(4, volts_in)
    (reading,) = run_driver(
        "mcp3008", {"channels": [4], "vref": vref}, spidev=FakeSpiDev({(0, 0): adc}), polls=1
    )
    assert reading == {"ch4_raw": code, "ch4_v": pytest.approx(volts_out)}


def test_differential_pairs_read_in_plus_minus_in_minus() -> None:
    adc = Mcp3008Sim(vref=3.3)
    adc.set_voltage(2, 2.0)
    adc.set_voltage(3, 1.0)
    spi = FakeSpiDev({(0, 0): adc})
    (reading,) = run_driver(
        "mcp3008", {"differential": [[2, 3], [3, 2]], "vref": 3.3}, spidev=spi, polls=1
    )
    assert reading == {
        "diff2_3_raw": 310,  # floor(1024 * 1.0 / 3.3)
        "diff2_3_v": pytest.approx(310 * 3.3 / 1023),
        "diff3_2_raw": 0,  # IN- above IN+ converts to 000h
        "diff3_2_v": 0.0,
    }
    assert [tx for tx, _ in spi.transfers] == [[0x01, 0x20, 0x00], [0x01, 0x30, 0x00]]  # SGL=0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": [8]}, "channels must be distinct inputs 0..7"),
        ({"channels": [1, 1]}, "channels must be distinct inputs 0..7"),
        ({"differential": [[0, 2]]}, r"differential pair \[0, 2\] is not one of the chip's"),
        ({"channels": []}, "nothing to read"),
        ({"vref": 0}, "vref must be a positive number"),
        ({"max_speed_hz": 10_000_000}, "max_speed_hz must be"),
        ({"chanels": [0]}, "chanels"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message), open_driver("mcp3008", options):
        pass


def test_open_sets_speed_and_mode_zero() -> None:
    spi = FakeSpiDev({(0, 0): Mcp3008Sim()})
    with open_driver("mcp3008", {"max_speed_hz": 1_350_000}, spidev=spi):
        assert (spi.max_speed_hz, spi.mode) == (1_350_000, 0)
    with pytest.raises(OSError, match="Bad file descriptor"):  # closed with the driver
        spi.xfer2([0])


# -- garbage -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rx", "reason"),
    [
        ([0x00, 0x04, 0x00], "null bit is 1"),
        ([0xFF, 0xFF, 0xFF], "null bit is 1"),
        ([0x00, 0x01], "response of 2 bytes"),
        ([0x00, 0x01, 0x00, 0x00], "response of 4 bytes"),
        ([0x00, 0x103, 0xFF], "bits beyond its 8-bit words"),
        ([0x00, 0x00, -1], "bits beyond its 8-bit words"),
    ],
)
def test_decode_rejects_garbage(rx: list[int], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode(rx)


def test_high_z_bits_are_masked_not_read() -> None:
    assert decode([0xFF, 0xF8 | 0x02, 0x2A]) == 0x22A


def test_stuck_high_miso_is_rejected_once_per_reason_and_never_a_reading(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spi = FakeSpiDev({(0, 0): StuckBus(1)})
    with open_driver("mcp3008", {"channels": [0, 1]}, spidev=spi) as driver:
        assert [driver.poll() for _ in range(3)] == [[], [], []]
        assert isinstance(driver, Mcp3008Driver)
        assert dict(driver.rejected) == {
            "ch0: null bit is 1 (no MCP3008 answering, or MISO stuck high)": 3
        }
    assert caplog.text.count("rejected input") == 1


class _Glitch:
    """An MCP3008 whose `bad`-th transaction comes back with MISO stuck high."""

    def __init__(self, adc: Mcp3008Sim, bad: int) -> None:
        self.adc, self.bad, self.n = adc, bad, 0

    def select(self) -> None:
        self.n += 1
        self.adc.select()

    def clock(self, mosi: int) -> int:
        bit = self.adc.clock(mosi)
        return 1 if self.n == self.bad else bit

    def deselect(self) -> None:
        self.adc.deselect()


def test_one_garbage_answer_drops_only_its_sample() -> None:
    spi = FakeSpiDev({(0, 0): _Glitch(_adc({0: 10, 1: 11}), bad=4)})  # poll 2, channel 1
    readings = run_driver("mcp3008", {"channels": [0, 1]}, spidev=spi, polls=3)
    assert readings == [{"ch0_raw": 10, "ch1_raw": 11}] * 2


def test_stuck_low_miso_reads_zero_the_limit_of_what_can_be_checked() -> None:
    spi = FakeSpiDev({(0, 0): StuckBus(0)})
    assert run_driver("mcp3008", {"channels": [0]}, spidev=spi, polls=1) == [{"ch0_raw": 0}]


# -- a missing device ----------------------------------------------------------------------


def test_missing_device_on_the_fake_raises_file_not_found() -> None:
    spi = FakeSpiDev({(0, 0): Mcp3008Sim()})
    with pytest.raises(FileNotFoundError, match=r"/dev/spidev0\.1"):
        run_driver("mcp3008", {"device": 1}, spidev=spi)


def test_without_a_fake_the_driver_opens_the_real_spidev() -> None:
    if Path("/dev/spidev0.0").exists():
        pytest.skip("this machine has /dev/spidev0.0: opening it is a hardware test")
    pytest.importorskip("spidev", reason="spidev (Linux only) is not installed")
    with pytest.raises(FileNotFoundError):
        run_driver("mcp3008", {"channels": [0]})


def test_without_spidev_installed_the_error_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "spidev", None)  # what `import spidev` sees when absent
    with pytest.raises(ModuleNotFoundError, match=r"python3-spidev.*pip install spidev"):
        run_driver("mcp3008", {"channels": [0]})
