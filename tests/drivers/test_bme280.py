"""The bme280 driver against the corpus vectors, through FakeSMBus and Bme280Sim."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest
from helpers import CORPUS

from pilog.drivers.bme280.driver import (
    Bme280Driver,
    Calibration,
    WrongDeviceError,
    compensate_pressure,
    compensate_temperature,
)
from pilog.errors import ConfigError
from pilog.testing.drivers import open_driver, run_driver
from pilog.testing.smbus import Bme280Sim, FakeSMBus

VECTORS_FILE = CORPUS / "bme280_vectors.json"
VECTOR_IDS = ["elixir_bme280_1", "elixir_bme280_2", "pimoroni_bme280", "bosch_bmp280_example"]
# The integer API is exact to 0.01 °C; SOURCES.md states integer-vs-double differences of up to
# ~0.4 Pa and ~0.002 %RH as inherent.
T_TOL_C, P_TOL_PA, H_TOL_PCT = 0.01, 0.5, 0.005


def _load() -> dict[str, Any]:
    if not VECTORS_FILE.is_file():
        pytest.skip(f"corpus file {VECTORS_FILE} absent (set PILOG_CORPUS to the corpus dir)")
    loaded: dict[str, Any] = json.loads(VECTORS_FILE.read_text())
    return loaded


@pytest.fixture(params=VECTOR_IDS)
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    by_id = {v["id"]: v for v in _load()["vectors"]}
    assert sorted(by_id) == sorted(VECTOR_IDS), "a vector was added or removed: list it here"
    found: dict[str, Any] = by_id[request.param]
    return found


@pytest.fixture
def first_vector() -> dict[str, Any]:
    found: dict[str, Any] = _load()["vectors"][0]
    return found


def _bus(vector: dict[str, Any], **sim: Any) -> tuple[FakeSMBus, Bme280Sim]:
    device = Bme280Sim.from_vector(vector, **sim)
    return FakeSMBus({0x76: device}), device


def test_every_vector_decodes_to_the_bosch_integer_results(vector: dict[str, Any]) -> None:
    bus, _ = _bus(vector)
    readings = run_driver("bme280", {}, smbus=bus, polls=2)
    want = vector["computed_integer"]
    assert readings == [readings[0]] * 2
    got = readings[0]
    assert got["temperature_c"] == want["temperature_centi_C"] / 100
    assert got["pressure_hpa"] == pytest.approx(want["pressure_Q24_8"] / 256 / 100, abs=1e-12)
    assert got["humidity_pct"] == pytest.approx(want["humidity_Q22_10"] / 1024, abs=1e-12)


def test_every_vector_agrees_with_the_double_formulas_within_integer_resolution(
    vector: dict[str, Any],
) -> None:
    bus, _ = _bus(vector)
    got = run_driver("bme280", {}, smbus=bus, polls=1)[0]
    want = vector["computed_double"]
    assert got["temperature_c"] == pytest.approx(want["temperature_C"], abs=T_TOL_C)
    assert got["pressure_hpa"] == pytest.approx(want["pressure_Pa"] / 100, abs=P_TOL_PA / 100)
    assert got["humidity_pct"] == pytest.approx(want["humidity_pct"], abs=H_TOL_PCT)


def test_every_vector_meets_its_published_expectations(vector: dict[str, Any]) -> None:
    bus, _ = _bus(vector)
    got = run_driver("bme280", {}, smbus=bus, polls=1)[0]
    published = vector["published_expected"]
    if "temperature_centi_C" in published:  # Bosch's BMP280 worked example (integer API)
        assert round(got["temperature_c"] * 100) == published["temperature_centi_C"]
        assert int(got["pressure_hpa"] * 100) == published["pressure_Pa_integer"]
        return
    assert got["temperature_c"] == pytest.approx(published["temperature_C"][0], abs=T_TOL_C)
    if "pressure_Pa" in published:
        assert got["pressure_hpa"] * 100 == pytest.approx(published["pressure_Pa"][0], abs=P_TOL_PA)
    else:
        assert got["pressure_hpa"] == pytest.approx(
            published["pressure_hPa"][0], abs=P_TOL_PA / 100
        )
    # elixir's published humidity tests their H4/H5 nibble swap (SOURCES.md); pimoroni's is right.
    if "humidity_pct" in published:
        assert got["humidity_pct"] == pytest.approx(published["humidity_pct"][0], abs=H_TOL_PCT)


def test_calibration_decodes_as_the_datasheet_table(vector: dict[str, Any]) -> None:
    regs = vector["registers"]
    cal = Calibration.parse(
        bytes.fromhex(regs["calib_0x88_0xA1_hex"]), bytes.fromhex(regs["calib_0xE1_0xE7_hex"])
    )
    want = {k.removeprefix("dig_").lower(): v for k, v in vector["decoded_calibration"].items()}
    assert vars(cal) == want
    swapped = vector["published_expected"].get("elixir_parsed_H4_H5")
    if swapped:
        assert [cal.h4, cal.h5] != swapped


def test_t_fine_matches_the_integer_reference(vector: dict[str, Any]) -> None:
    regs = vector["registers"]
    cal = Calibration.parse(
        bytes.fromhex(regs["calib_0x88_0xA1_hex"]), bytes.fromhex(regs["calib_0xE1_0xE7_hex"])
    )
    centi_c, t_fine = compensate_temperature(vector["adc"]["adc_T"], cal)
    assert (centi_c, t_fine) == (
        vector["computed_integer"]["temperature_centi_C"],
        vector["computed_integer"]["t_fine"],
    )
    q24_8 = compensate_pressure(vector["adc"]["adc_P"], t_fine, cal)
    assert q24_8 == vector["computed_integer"]["pressure_Q24_8"]


def test_absent_device_nacks_at_open_naming_bus_address_and_i2cdetect() -> None:
    with pytest.raises(OSError, match="Remote I/O error") as info:
        run_driver("bme280", {"address": 0x77}, smbus=FakeSMBus(), polls=1)
    assert info.value.errno == errno.EREMOTEIO
    message = str(info.value)
    assert message.startswith("no device answers at 0x77 on /dev/i2c-1 (Remote I/O error)")
    assert "i2cdetect -y 1" in message


def test_unplugged_device_nacks_at_poll(first_vector: dict[str, Any]) -> None:
    bus, _ = _bus(first_vector)
    with open_driver("bme280", {}, smbus=bus) as driver:
        assert driver.poll()
        bus.detach(0x76)
        with pytest.raises(OSError, match="Remote I/O error") as info:
            driver.poll()
    assert info.value.errno == errno.EREMOTEIO


def test_wrong_chip_id_is_a_clear_error(first_vector: dict[str, Any]) -> None:
    bus = FakeSMBus({0x76: Bme280Sim.from_vector(first_vector)})
    bus.devices[0x76].regs[0xD0] = 0x58  # type: ignore[attr-defined]  # a BMP280
    with pytest.raises(WrongDeviceError, match=r"chip id 0x58 is not a BME280 \(0x60\).*BMP280"):
        run_driver("bme280", {}, smbus=bus, polls=1)


def test_zeroed_calibration_is_a_clear_error(first_vector: dict[str, Any]) -> None:
    bus, device = _bus(first_vector)
    device.regs[0x8E:0x90] = b"\x00\x00"  # dig_P1, the pressure divisor (§4.2.3)
    with pytest.raises(WrongDeviceError, match="calibration dig_T1/dig_P1 read as zero"):
        run_driver("bme280", {}, smbus=bus, polls=1)


@pytest.mark.parametrize(
    ("adc", "reason"),
    [
        ((0xFFFF0, 284052, 35181), "temperature"),  # far above 85 °C
        ((0x10000, 284052, 35181), "temperature"),  # far below -40 °C
        ((536368, 0xFFFF0, 35181), "pressure"),  # below 300 hPa
        ((0x80000, 0x80000, 0x8000), "no temperature measurement"),  # reset values
        ((536368, 284052, 0x8000), "no humidity measurement"),
    ],
)
def test_out_of_range_or_missing_data_is_rejected_not_returned(
    first_vector: dict[str, Any], adc: tuple[int, int, int], reason: str
) -> None:
    bus, device = _bus(first_vector)
    with open_driver("bme280", {}, smbus=bus) as driver:
        device.set_adc(*adc)
        assert driver.poll() == []
        assert [r for r in driver.rejected if reason in r] != []
        device.set_adc(*(first_vector["adc"][k] for k in ("adc_T", "adc_P", "adc_H")))
        assert driver.poll() != []  # the next good sample is data again


def test_forced_mode_writes_oversampling_then_returns_to_sleep(
    first_vector: dict[str, Any],
) -> None:
    bus, device = _bus(first_vector)
    options = {
        "oversampling_temperature": 2,
        "oversampling_pressure": 16,
        "oversampling_humidity": 4,
    }
    with open_driver("bme280", options, smbus=bus) as driver:
        assert driver.poll()
    writes = [data for kind, _, data in bus.transactions if kind == "w" and len(data) == 2]
    # ctrl_hum (osrs_h x4 = 011) precedes ctrl_meas (osrs_t x2 = 010, osrs_p x16 = 101, forced)
    assert writes[-2:] == [bytes([0xF2, 0x03]), bytes([0xF4, 0b010_101_01])]
    assert device.regs[0xF4] & 0x03 == 0  # sleep again after the measurement (§3.3.3)


def test_normal_mode_configures_standby_and_filter_and_sleeps_on_close(
    first_vector: dict[str, Any],
) -> None:
    bus, device = _bus(first_vector)
    options = {"mode": "normal", "filter": 4, "standby_ms": 62.5}
    with open_driver("bme280", options, smbus=bus) as driver:
        assert device.regs[0xF4] & 0x03 == 0x03
        assert device.regs[0xF5] == (0b001 << 5 | 0b010 << 2)
        readings = [driver.poll() for _ in range(3)]
    assert readings[0]
    assert readings == [readings[0]] * 3
    assert device.regs[0xF4] & 0x03 == 0


def test_skipped_channels_are_absent(first_vector: dict[str, Any]) -> None:
    bus, _ = _bus(first_vector)
    options = {"oversampling_pressure": 0, "oversampling_humidity": 0}
    readings = run_driver("bme280", options, smbus=bus, polls=1)
    assert readings == [
        {"temperature_c": first_vector["computed_integer"]["temperature_centi_C"] / 100}
    ]


class TickingClock:
    """Monotonic ns that advance by `step_ns` at every read (0: time stands still)."""

    def __init__(self, step_ns: int) -> None:
        self.now, self.step_ns = 0, step_ns

    def __call__(self) -> int:
        self.now += self.step_ns
        return self.now


def test_open_waits_for_the_nvm_copy_after_reset(first_vector: dict[str, Any]) -> None:
    bus, _ = _bus(first_vector, clock=TickingClock(0))
    with pytest.raises(TimeoutError, match="NVM copy after reset did not finish"):
        run_driver("bme280", {}, smbus=bus, polls=1)


def test_poll_waits_for_the_measuring_bit(first_vector: dict[str, Any]) -> None:
    clock = TickingClock(1_000_000)
    bus, _ = _bus(first_vector, clock=clock)
    with open_driver("bme280", {}, smbus=bus) as driver:
        clock.step_ns = 0  # the measurement never completes
        with pytest.raises(TimeoutError, match="measurement did not finish"):
            driver.poll()
        clock.step_ns = 1_000_000
        assert driver.poll() != []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"standby_ms": 7}, "standby_ms must be one of"),
        ({"address": 0x50}, "address"),
        ({"oversampling_temperature": 0}, "oversampling_temperature"),
        ({"mode": "sleep"}, "mode"),
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_driver("bme280", options, smbus=FakeSMBus(), polls=1)


def test_registered_under_its_folder_name() -> None:
    from pilog.drivers import find_driver

    assert find_driver("bme280") is Bme280Driver
