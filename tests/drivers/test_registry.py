"""Every driver folder is registered, and its sample config parses and validates."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import pilog.drivers
from pilog.config import parse_config
from pilog.drivers import BUILTIN, PollingDriver, find_driver
from pilog.drivers.base import parse_options
from pilog.errors import ConfigError

DRIVERS_DIR = Path(pilog.drivers.__file__).parent
FOLDERS = sorted(p.parent.name for p in DRIVERS_DIR.glob("*/driver.py"))


def test_every_driver_folder_is_a_builtin_named_after_it() -> None:
    assert "synthetic" in FOLDERS
    assert set(FOLDERS) == set(BUILTIN)
    for name in FOLDERS:
        assert find_driver(name).name == name


@pytest.mark.parametrize("name", FOLDERS)
def test_sample_config_parses_and_validates(name: str) -> None:
    folder = DRIVERS_DIR / name
    assert (folder / "README.md").is_file()
    text = (folder / "sample.toml").read_text()
    config = parse_config(tomllib.loads(text), f"{name}/sample.toml", {})
    assert config.sensor, "sample defines no sensor"
    for sensor in config.sensor:
        cls = find_driver(sensor.driver)
        assert cls.name == name
        assert cls.description
        parse_options(cls, sensor, "sample.toml")


def test_driver_by_module_path_and_clear_errors() -> None:
    cls = find_driver("pilog.drivers.synthetic.driver:SyntheticDriver")
    assert issubclass(cls, PollingDriver)
    with pytest.raises(ConfigError, match="unknown driver 'bme281'"):
        find_driver("bme281")
    with pytest.raises(ConfigError, match="cannot import no_such_module"):
        find_driver("no_such_module:X")
    with pytest.raises(ConfigError, match="has no Nope"):
        find_driver("pilog.drivers.synthetic.driver:Nope")
    with pytest.raises(ConfigError, match=r"not a pilog\.drivers\.PollingDriver"):
        find_driver("pilog.config:Config")


def test_unknown_driver_option_is_an_error_naming_the_sensor() -> None:
    config = parse_config(
        tomllib.loads('[[sensor]]\nname = "demo"\ndriver = "synthetic"\nperiod = 3'), "x.toml", {}
    )
    with pytest.raises(ConfigError, match=r"x.toml: sensor 'demo' \(driver synthetic\).*period"):
        parse_options(find_driver("synthetic"), config.sensor[0], "x.toml")
