"""ds18b20: w1_therm's w1_slave files, from the corpus, in a sysfs tree under a tmp dir."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import CORPUS

from pilog.drivers.ds18b20.driver import parse_w1_slave
from pilog.drivers.transports import device_error_message
from pilog.errors import ConfigError
from pilog.testing.drivers import open_driver, run_driver

W1_CORPUS = CORPUS / "ds18b20_w1_slave"
OK_23000 = "70 01 4b 46 7f ff 10 10 e1 : crc=e1 YES\n70 01 4b 46 7f ff 10 10 e1 t=23000\n"


def corpus_vectors() -> list[dict[str, Any]]:
    path = CORPUS / "ds18b20_vectors.json"
    if not path.is_file():
        return []
    files: list[dict[str, Any]] = json.loads(path.read_text())["files"]
    return files


@pytest.fixture
def corpus() -> Path:
    if not W1_CORPUS.is_dir():
        pytest.skip(f"corpus folder {W1_CORPUS} is absent (shared test data, not in the repo)")
    return W1_CORPUS


def make_sysfs(root: Path, devices: dict[str, str]) -> Path:
    """A /sys with a w1 bus holding `devices` ({id: w1_slave text}); returns the sysfs root."""
    bus = root / "sys" / "bus" / "w1" / "devices"
    (bus / "w1_bus_master1").mkdir(parents=True)
    for device, text in devices.items():
        (bus / device).mkdir()
        (bus / device / "w1_slave").write_text(text)
    return root / "sys"


def reason_of(expected: str) -> str:
    """The reject reason the corpus' description of a bad file calls for."""
    if "crc=NO" in expected:
        return "crc=NO"
    if "power-on" in expected:
        return "power-on"
    return "all-zero"


@pytest.mark.parametrize("vector", corpus_vectors(), ids=lambda v: v["file"])
def test_corpus_file_decodes_to_published_value_or_is_rejected(
    corpus: Path, vector: dict[str, Any], tmp_path: Path
) -> None:
    text = (corpus / vector["file"]).read_text()
    sysfs = make_sysfs(tmp_path, {"28-0000000000aa": text})
    with open_driver("ds18b20", sysfs_root=sysfs) as driver:
        readings = driver.poll()
        rejected = dict(driver.rejected)
    expected = vector["expected"]
    if isinstance(expected, float | int):
        assert readings == [{"device": "28-0000000000aa", "temperature_c": pytest.approx(expected)}]
        assert rejected == {}
    else:
        assert readings == []
        [(reason, count)] = rejected.items()
        assert count == 1
        assert reason.startswith("28-0000000000aa: ")
        assert reason_of(expected) in reason


def test_corpus_vectors_cover_every_case(corpus: Path) -> None:
    # Guards the parametrisation above against silently testing nothing.
    vectors = corpus_vectors()
    assert len(vectors) >= 10
    assert {reason_of(v["expected"]) for v in vectors if isinstance(v["expected"], str)} == {
        "crc=NO",
        "power-on",
        "all-zero",
    }


def test_corpus_bus_tree_yields_only_the_good_device(corpus: Path, tmp_path: Path) -> None:
    # The corpus' /sys/bus/w1/devices: one good sensor (23.000 °C), one at the 85 °C power-on
    # value, one all-zero, one crc=NO, and the bus master (not a 28- device).
    (tmp_path / "bus" / "w1").mkdir(parents=True)
    (tmp_path / "bus" / "w1" / "devices").symlink_to(corpus / "sys_bus_w1_devices")
    with open_driver("ds18b20", sysfs_root=tmp_path) as driver:
        readings = [r for _ in range(3) for r in driver.poll()]
        rejected = dict(driver.rejected)
    assert readings == [{"device": "28-000004e1a947", "temperature_c": 23.0}] * 3
    assert rejected == {
        "28-000004ef4b1b: 85 °C power-on reset value": 3,
        "28-011432f138f9: all-zero scratchpad": 3,
        "28-02131d9920aa: crc=NO": 3,
    }


def test_devices_option_selects_one_probe(tmp_path: Path) -> None:
    sysfs = make_sysfs(
        tmp_path,
        {"28-000000000001": OK_23000, "28-000000000002": OK_23000.replace("23000", "19500")},
    )
    assert (
        run_driver("ds18b20", sysfs_root=sysfs, polls=2)
        == [
            {"device": "28-000000000001", "temperature_c": 23.0},
            {"device": "28-000000000002", "temperature_c": 19.5},
        ]
        * 2
    )
    assert run_driver("ds18b20", {"devices": ["28-000000000002"]}, sysfs_root=sysfs, polls=1) == [
        {"device": "28-000000000002", "temperature_c": 19.5}
    ]


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("empty file", "", "malformed w1_slave"),
        ("first line only", OK_23000.splitlines()[0] + "\n", "malformed w1_slave"),
        ("truncated t=", OK_23000.replace("t=23000", "t="), "malformed w1_slave"),
        ("NUL bytes", "\0" * 12 + OK_23000[12:], "malformed w1_slave"),
        ("garbage", "\xff\xfe not a w1 file\n", "malformed w1_slave"),
        ("lines swapped", "\n".join(reversed(OK_23000.splitlines())), "malformed w1_slave"),
        ("above 125 °C", OK_23000.replace("t=23000", "t=125063"), "out of range: t=125063"),
        ("below -55 °C", OK_23000.replace("t=23000", "t=-55063"), "out of range: t=-55063"),
    ],
)
def test_bad_w1_slave_is_rejected_and_counted(
    name: str, text: str, reason: str, tmp_path: Path
) -> None:
    sysfs = make_sysfs(tmp_path, {"28-000000000001": text, "28-000000000002": OK_23000})
    with open_driver("ds18b20", sysfs_root=sysfs) as driver:
        assert driver.poll() == [{"device": "28-000000000002", "temperature_c": 23.0}]
        assert driver.poll() == [{"device": "28-000000000002", "temperature_c": 23.0}]
        assert dict(driver.rejected) == {f"28-000000000001: {reason}": 2}


def test_datasheet_range_ends_are_readings() -> None:
    for milli in (-55000, 125000, 0, -62):
        text = OK_23000.replace("t=23000", f"t={milli}")
        assert parse_w1_slave(text) == milli


def test_missing_bus_names_the_node_and_the_pi_config_line(tmp_path: Path) -> None:
    bus = tmp_path / "bus" / "w1" / "devices"
    with pytest.raises(FileNotFoundError) as raised, open_driver("ds18b20", sysfs_root=tmp_path):
        pass
    message = str(raised.value)
    # The wording of every other bus (transports.device_error_message): node, then the fix.
    assert message.startswith(f"{bus} does not exist (the 1-wire bus is off: ")
    assert "dtoverlay=w1-gpio to /boot/firmware/config.txt" in message
    assert "then reboot" in message
    assert "[Errno" not in message
    assert message == device_error_message(errno.ENOENT, str(bus), "w1")


def test_bus_without_ds18b20_fails_open_saying_what_to_check(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {})
    with pytest.raises(FileNotFoundError, match=r"no DS18B20 \(28-\*\)") as raised:
        run_driver("ds18b20", sysfs_root=sysfs)
    assert "GPIO 4 by default, with a 4.7 kΩ pull-up" in str(raised.value)


def test_listed_device_absent_names_its_node_and_what_to_check(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {"28-000000000001": OK_23000})
    bus = sysfs / "bus" / "w1" / "devices"
    with pytest.raises(FileNotFoundError) as raised:
        run_driver("ds18b20", {"devices": ["28-000000000001", "28-00000000000f"]}, sysfs_root=sysfs)
    assert str(raised.value) == (
        f"{bus}/28-00000000000f does not exist: check the probe's wiring (data to the "
        "dtoverlay=w1-gpio pin, GPIO 4 by default, with a 4.7 kΩ pull-up to 3.3 V) and its id "
        f"(ls {bus} lists the devices the bus found)"
    )


def test_unplugged_probe_is_counted_and_the_last_one_gone_fails_the_poll(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {"28-000000000001": OK_23000, "28-000000000002": OK_23000})
    bus = sysfs / "bus" / "w1" / "devices"
    options = {"devices": ["28-000000000001", "28-000000000002"]}
    with open_driver("ds18b20", options, sysfs_root=sysfs) as driver:
        assert len(driver.poll()) == 2
        (bus / "28-000000000001" / "w1_slave").unlink()
        assert driver.poll() == [{"device": "28-000000000002", "temperature_c": 23.0}]
        assert dict(driver.rejected) == {"28-000000000001: read failed (absent)": 1}
        (bus / "28-000000000002" / "w1_slave").unlink()
        with pytest.raises(FileNotFoundError, match="no DS18B20 to read"):
            driver.poll()


def test_unreadable_w1_slave_is_counted_with_its_errno(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {"28-000000000002": OK_23000})
    # A directory where the file should be: reading it fails with EISDIR, a real OSError.
    (sysfs / "bus" / "w1" / "devices" / "28-000000000001" / "w1_slave").mkdir(parents=True)
    with open_driver("ds18b20", sysfs_root=sysfs) as driver:
        assert driver.poll() == [{"device": "28-000000000002", "temperature_c": 23.0}]
        assert dict(driver.rejected) == {"28-000000000001: read failed (EISDIR)": 1}


def test_unknown_option_or_malformed_device_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="device"):
        run_driver("ds18b20", {"device": "28-000000000001"})
    for bad in ("28-00000000001", "28-00000000000G", "../../../etc"):
        with pytest.raises(ConfigError, match=r"devices\[0\]"):
            run_driver("ds18b20", {"devices": [bad]})
