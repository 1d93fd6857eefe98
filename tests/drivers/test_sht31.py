"""The sht31 driver against the corpus reads, through FakeSMBus and Sht31Sim."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest
from helpers import CORPUS

from pilog.drivers.sht31.driver import Sht31Driver, convert, crc8
from pilog.errors import ConfigError
from pilog.testing.drivers import open_driver, run_driver
from pilog.testing.smbus import FakeSMBus, Sht31Sim

VECTORS_FILE = CORPUS / "sht31_vectors.json"
READ_IDS = [
    "senlib_1",
    "senlib_2",
    "senlib_3",
    "python_sht31_dummy",
    "bus_all_ff",
    "corrupted_senlib_1",
]
VALUE_TOL = 1e-6  # the corpus states computed values to 6 decimals
PUBLISHED_TOL = 0.01  # senlib publishes two decimals


def _load() -> dict[str, Any]:
    if not VECTORS_FILE.is_file():
        pytest.skip(f"corpus file {VECTORS_FILE} absent (set PILOG_CORPUS to the corpus dir)")
    loaded: dict[str, Any] = json.loads(VECTORS_FILE.read_text())
    return loaded


@pytest.fixture(params=READ_IDS)
def read(request: pytest.FixtureRequest) -> dict[str, Any]:
    by_id = {r["id"]: r for r in _load()["reads"]}
    assert sorted(by_id) == sorted(READ_IDS), "a read was added or removed: list it here"
    found: dict[str, Any] = by_id[request.param]
    return found


def test_every_read_decodes_or_is_rejected_as_the_corpus_says(read: dict[str, Any]) -> None:
    bus = FakeSMBus({0x44: Sht31Sim.from_vector(read)})
    with open_driver("sht31", {}, smbus=bus) as driver:
        readings = driver.poll()
    if isinstance(read["expected"], str):
        assert read["expected"] == "reject: CRC mismatch"
        assert readings == []
        assert [r for r in driver.rejected if "CRC mismatch" in r] != []
        return
    assert readings == [
        {
            "temperature_c": pytest.approx(read["expected"]["temperature_C"], abs=VALUE_TOL),
            "humidity_pct": pytest.approx(read["expected"]["humidity_pct"], abs=VALUE_TOL),
        }
    ]
    assert readings[0]["temperature_c"] == pytest.approx(
        read["published"]["temperature_C"], abs=PUBLISHED_TOL
    )
    assert readings[0]["humidity_pct"] == pytest.approx(
        read["published"]["humidity_pct"], abs=PUBLISHED_TOL
    )
    assert not driver.rejected


def test_crc_matches_the_datasheet_example_and_every_read(read: dict[str, Any]) -> None:
    crc = _load()["crc"]
    example = crc["datasheet_example"]
    assert crc8(int(example["data"], 16).to_bytes(2, "big")) == int(example["crc"], 16)
    raw = bytes(read["bytes"])
    assert crc8(raw[0:2]) == read["crc_T"]["calc"]
    assert crc8(raw[3:5]) == read["crc_RH"]["calc"]


def test_conversion_endpoints_from_the_datasheet() -> None:
    endpoints = _load()["conversion"]["endpoints"]
    for raw, key in ((0, "S=0"), (65535, "S=65535")):
        assert convert(raw, raw) == pytest.approx(
            (endpoints[key]["T_C"], endpoints[key]["RH"]), abs=1e-9
        )


def test_status_register_default_is_read_at_open() -> None:
    status = _load()["status_register"]
    device = Sht31Sim()
    bus = FakeSMBus({0x44: device})
    with open_driver("sht31", {}, smbus=bus) as driver:
        assert isinstance(driver, Sht31Driver)
        assert driver.status == int(status["default_after_reset"], 16)
    assert ("r", 0x44, bytes(status["default_read_bytes"])) in bus.transactions


def test_poll_sends_single_shot_high_repeatability_without_stretching() -> None:
    device = Sht31Sim(s_t=0x623C, s_rh=0x6DDF)
    bus = FakeSMBus({0x45: device})
    readings = run_driver("sht31", {"address": 0x45}, smbus=bus, polls=2)
    assert len(readings) == 2
    assert device.commands == [0xF32D, 0x2400, 0x2400]
    reads = [data for kind, _, data in bus.transactions if kind == "r"]
    assert [len(r) for r in reads] == [3, 6, 6]


def test_corrupted_crc_is_rejected_then_recovers() -> None:
    device = Sht31Sim()
    with open_driver("sht31", {}, smbus=FakeSMBus({0x44: device})) as driver:
        device.corrupt_crc = True
        assert driver.poll() == []
        device.corrupt_crc = False
        assert driver.poll() != []
    assert sum(driver.rejected.values()) == 1


@pytest.mark.parametrize("s_t", [0, 0x0300, 0xFFFF])  # -45 °C, -42.9 °C, 130 °C
def test_temperature_outside_the_specified_range_is_rejected(s_t: int) -> None:
    with open_driver("sht31", {}, smbus=FakeSMBus({0x44: Sht31Sim(s_t=s_t)})) as driver:
        assert driver.poll() == []
        assert [r for r in driver.rejected if "outside" in r] != []


def test_absent_device_nacks_at_open_naming_bus_address_and_i2cdetect() -> None:
    with pytest.raises(OSError, match="Remote I/O error") as info:
        run_driver("sht31", {}, smbus=FakeSMBus({0x45: Sht31Sim()}), polls=1)
    assert info.value.errno == errno.EREMOTEIO
    message = str(info.value)
    assert message.startswith("no device answers at 0x44 on /dev/i2c-1 (Remote I/O error)")
    assert "i2cdetect -y 1" in message


def test_unplugged_device_nacks_at_poll() -> None:
    bus = FakeSMBus({0x44: Sht31Sim()})
    with open_driver("sht31", {}, smbus=bus) as driver:
        assert driver.poll()
        bus.detach(0x44)
        with pytest.raises(OSError, match="Remote I/O error") as info:
            driver.poll()
    assert info.value.errno == errno.EREMOTEIO


def test_a_measurement_that_never_finishes_nacks_after_retries() -> None:
    now_ns = [0]
    device = Sht31Sim(clock=lambda: now_ns[0])  # time stands still for the sensor
    bus = FakeSMBus({0x44: device})
    with open_driver("sht31", {}, smbus=bus) as driver:
        with pytest.raises(OSError, match="Remote I/O error"):
            driver.poll()
        reads = [data for kind, _, data in bus.transactions if kind == "r"]
        assert len(reads) == 1  # only the status word at open: every data read was NACKed


def test_invalid_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="address"):
        run_driver("sht31", {"address": 0x76}, smbus=FakeSMBus(), polls=1)
