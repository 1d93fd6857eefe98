"""A device node that will not open is named, with the fix (Pi config line or group) beside it."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import serial
from helpers import pilog, write_config

from pilog.drivers import serialport, transports
from pilog.drivers.transports import device_error_message
from pilog.testing.drivers import open_driver
from pilog.testing.spidev import FakeSpiDev, Mcp3008Sim

# Bus numbers no machine running the tests has, so the real modules meet a missing node.
ABSENT_BUS = 97
ENABLE = {
    "i2c": ["dtparam=i2c_arm=on", "/boot/firmware/config.txt", "raspi-config nonint do_i2c 0"],
    "spi": ["dtparam=spi=on", "/boot/firmware/config.txt", "raspi-config nonint do_spi 0"],
    "serial": ["enable_uart=1", "/boot/firmware/config.txt", "console=serial0"],
    "w1": ["dtoverlay=w1-gpio", "/boot/firmware/config.txt", "raspi-config", "GPIO 4"],
}
GROUP = {"i2c": "group i2c", "spi": "group spi", "serial": "group dialout"}
PATHS = {
    "i2c": "/dev/i2c-1",
    "spi": "/dev/spidev0.0",
    "serial": "/dev/ttyAMA0",
    "w1": "/sys/bus/w1/devices",
}


def open_error(kind: type[OSError], driver: str, config: dict[str, Any], **buses: Any) -> str:
    """The message of the `kind` error that opening `driver` with `config` raises."""
    with pytest.raises(kind) as caught, open_driver(driver, config, **buses):
        pass
    return str(caught.value)


def _permission_denied(path: str) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


# -- the one message builder ----------------------------------------------------------------


@pytest.mark.parametrize("bus", ["i2c", "spi", "serial", "w1"])
def test_missing_node_message_names_it_and_how_to_enable_the_bus(bus: Any) -> None:
    message = device_error_message(errno.ENOENT, PATHS[bus], bus)
    assert message.startswith(f"{PATHS[bus]} does not exist")
    for fix in ENABLE[bus]:
        assert fix in message


@pytest.mark.parametrize("bus", ["i2c", "spi", "serial"])
def test_permission_denied_message_names_the_node_and_the_group(bus: Any) -> None:
    message = device_error_message(errno.EACCES, PATHS[bus], bus)
    assert message.startswith(f"{PATHS[bus]}: permission denied")
    assert GROUP[bus] in message


def test_missing_usb_serial_adapter_is_told_to_plug_in_not_to_enable_the_uart() -> None:
    message = device_error_message(errno.ENOENT, "/dev/ttyUSB0", "serial")
    assert "/dev/ttyUSB0 does not exist: plug the device in" in message
    assert "/dev/serial/by-id/" in message
    assert "enable_uart" not in message


def test_other_errors_keep_the_reason_and_name_the_node() -> None:
    message = device_error_message(errno.EBUSY, "/dev/i2c-1", "i2c", "Device or resource busy")
    assert message == "/dev/i2c-1 would not open: Device or resource busy"


# -- I2C: smbus2 opening /dev/i2c-N -----------------------------------------------------------


@pytest.mark.parametrize("driver", ["bme280", "sht31"])
def test_i2c_driver_on_a_missing_bus_names_the_node_and_dtparam(driver: str) -> None:
    message = open_error(FileNotFoundError, driver, {"bus": ABSENT_BUS})
    assert f"/dev/i2c-{ABSENT_BUS} does not exist" in message
    assert "dtparam=i2c_arm=on" in message
    assert "[Errno" not in message


def test_i2c_permission_denied_names_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests run as root, which a mode-000 node does not stop: the refusal is injected
    # where smbus2.SMBus opens the node.
    def refuse(bus: int) -> None:
        raise _permission_denied(f"/dev/i2c-{bus}")

    monkeypatch.setattr(transports.smbus2, "SMBus", refuse)
    message = open_error(PermissionError, "bme280", {"bus": 1})
    assert re.search(r"^/dev/i2c-1: permission denied.*group i2c", message)


# -- SPI: spidev opening /dev/spidevB.C --------------------------------------------------------


def test_spi_missing_node_through_the_real_spidev_names_it_and_dtparam() -> None:
    pytest.importorskip("spidev")
    message = open_error(FileNotFoundError, "mcp3008", {"bus": ABSENT_BUS, "device": 1})
    # py-spidev's own error is "[Errno 2] No such file or directory", naming no node.
    assert f"/dev/spidev{ABSENT_BUS}.1 does not exist" in message
    assert "dtparam=spi=on" in message


def test_spi_missing_chip_select_on_the_fake_names_the_node() -> None:
    spi = FakeSpiDev({(0, 0): Mcp3008Sim()})
    message = open_error(FileNotFoundError, "mcp3008", {"device": 1}, spidev=spi)
    assert re.search(r"^/dev/spidev0\.1 does not exist.*dtparam=spi=on", message)


class _RefusingSpiDev(FakeSpiDev):
    """A node that exists but that this user may not open."""

    def open(self, bus: int, device: int) -> None:
        raise _permission_denied(f"/dev/spidev{bus}.{device}")


def test_spi_permission_denied_names_the_group() -> None:
    message = open_error(PermissionError, "mcp3008", {}, spidev=_RefusingSpiDev())
    assert re.search(r"^/dev/spidev0\.0: permission denied.*group spi", message)


# -- serial: pyserial opening the port ----------------------------------------------------------


def test_missing_pi_uart_names_it_and_enable_uart(tmp_path: Path) -> None:
    port = tmp_path / "serial0"
    message = open_error(FileNotFoundError, "nmea", {"port": str(port)})
    assert f"{port} does not exist" in message
    assert "enable_uart=1" in message
    assert "console=serial0" in message


def test_serial_permission_denied_names_dialout(monkeypatch: pytest.MonkeyPatch) -> None:
    # pyserial reports a refused open as SerialException carrying the errno of os.open.
    def refuse(port: str, *args: object, **kwargs: object) -> None:
        raise serial.SerialException(errno.EACCES, f"could not open port {port}: denied")

    monkeypatch.setattr(serialport.serial, "Serial", refuse)
    message = open_error(PermissionError, "geiger", {"port": "/dev/ttyAMA0"})
    assert re.search(r"^/dev/ttyAMA0: permission denied.*group dialout", message)


# -- end to end: what `pilog check` prints -------------------------------------------------------


def test_check_names_the_missing_spi_and_i2c_nodes_and_their_fixes(tmp_path: Path) -> None:
    pytest.importorskip("spidev")
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        sensors=[
            {"name": "adc", "driver": "mcp3008", "bus": ABSENT_BUS, "interval_ms": 1000},
            {"name": "air", "driver": "bme280", "bus": ABSENT_BUS, "interval_ms": 1000},
        ],
    )
    result = pilog("check", "--json", "-c", config)
    assert result.returncode == 1, result.stdout + result.stderr
    outcomes = {o["what"]: o for o in json.loads(result.stdout)}
    adc, air = outcomes["adc"], outcomes["air"]
    assert not adc["ok"]
    assert f"/dev/spidev{ABSENT_BUS}.0 does not exist" in adc["detail"]
    assert "dtparam=spi=on" in adc["detail"]
    assert not air["ok"]
    assert f"/dev/i2c-{ABSENT_BUS} does not exist" in air["detail"]
    assert "dtparam=i2c_arm=on" in air["detail"]


def test_check_names_the_missing_1_wire_bus_and_the_pi_config_line(tmp_path: Path) -> None:
    bus = Path("/sys/bus/w1/devices")
    if bus.exists():
        pytest.skip(f"{bus} exists on this machine: the bus is not missing here")
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        sensors=[{"name": "probes", "driver": "ds18b20", "interval_ms": 1000}],
    )
    result = pilog("check", "--json", "-c", config)
    assert result.returncode == 1, result.stdout + result.stderr
    (probes,) = [o for o in json.loads(result.stdout) if o["what"] == "probes"]
    assert not probes["ok"]
    assert probes["detail"].endswith(device_error_message(errno.ENOENT, str(bus), "w1"))
    assert "dtoverlay=w1-gpio" in probes["detail"]
