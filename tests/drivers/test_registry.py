"""Every driver folder is registered, and its sample config parses and validates."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest
from helpers import pilog as pilog_cli

import pilog.drivers
from pilog.config import parse_config
from pilog.drivers import BUILTIN, PollingDriver, find_driver
from pilog.drivers.base import parse_options
from pilog.errors import ConfigError, ConfigProblemsError
from pilog.runtime import load_drivers

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


def test_a_misspelt_driver_name_gets_the_closest_built_in() -> None:
    with pytest.raises(ConfigError) as err:
        find_driver("bme208")
    assert str(err.value) == (
        "unknown driver 'bme208'; did you mean bme280? `pilog drivers` lists them "
        "(or name a class as 'package.module:Class')"
    )


def test_every_bad_sensor_is_reported_at_once_naming_file_and_sensor() -> None:
    config = parse_config(
        tomllib.loads(
            """
            [[sensor]]
            name = "lab"
            driver = "bme208"
            [[sensor]]
            name = "demo"
            driver = "synthetic"
            perod_s = 3
            [[sensor]]
            name = "fine"
            driver = "synthetic"
            [[sensor]]
            name = "shed"
            driver = "no_such_module:Driver"
            """
        ),
        "/etc/pilog/pilog.toml",
        {},
    )
    with pytest.raises(ConfigProblemsError) as err:
        load_drivers(config)
    lab, demo, shed = err.value.problems
    assert lab == (
        "/etc/pilog/pilog.toml: sensor[0] (name \"lab\"): unknown driver 'bme208'; "
        "did you mean bme280? `pilog drivers` lists them (or name a class as "
        "'package.module:Class')"
    )
    assert demo == (
        '/etc/pilog/pilog.toml: sensor[1] (name "demo"): unknown key `perod_s`; '
        "did you mean `period_s`?"
    )
    assert shed.startswith('/etc/pilog/pilog.toml: sensor[3] (name "shed"): driver ')
    assert shed.endswith(
        "put no_such_module.py next to the config file, list its directory in "
        "driver_paths, or install its package"
    )


@pytest.fixture
def own_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Directories a test makes importable leave sys.path when it ends."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.mark.usefixtures("own_sys_path")
def test_a_module_class_driver_is_found_beside_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "beside_config_driver.py").write_text(
        "from pilog.drivers.synthetic.driver import DRIVER as Beside\n"
    )
    config = parse_config(
        tomllib.loads('[[sensor]]\nname = "b"\ndriver = "beside_config_driver:Beside"'),
        str(tmp_path / "pilog.toml"),
        {},
    )
    ((_, cls, _),) = load_drivers(config)
    assert cls.name == "synthetic"


@pytest.mark.usefixtures("own_sys_path")
def test_driver_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "drivers").mkdir()
    (tmp_path / "drivers" / "in_driver_paths.py").write_text(
        "from pilog.drivers.synthetic.driver import DRIVER as Listed\n"
    )
    config = parse_config(
        tomllib.loads(
            'driver_paths = ["drivers"]\n[[sensor]]\nname = "l"\ndriver = "in_driver_paths:Listed"'
        ),
        str(tmp_path / "etc" / "pilog.toml"),
        {},
    )
    with pytest.raises(ConfigError, match="cannot import in_driver_paths"):
        load_drivers(config)  # "drivers" is not beside etc/pilog.toml
    config = parse_config(
        tomllib.loads(
            'driver_paths = ["../drivers"]\n[[sensor]]\nname = "l"\n'
            'driver = "in_driver_paths:Listed"'
        ),
        str(tmp_path / "etc" / "pilog.toml"),
        {},
    )
    ((_, cls, _),) = load_drivers(config)
    assert cls.name == "synthetic"


# -- pilog drivers ------------------------------------------------------------------------


def test_drivers_json_lists_every_builtin_with_kind_and_what_it_reads() -> None:
    result = pilog_cli("drivers", "--json")
    assert result.returncode == 0, result.stderr
    listed = {d["name"]: d for d in json.loads(result.stdout)}
    assert set(BUILTIN) <= set(listed)
    for name in BUILTIN:
        assert listed[name]["kind"] in ("polling", "streaming")
        assert listed[name]["reads"] == find_driver(name).description
        assert listed[name]["error"] is None


def test_drivers_name_prints_options_and_a_sample_ready_to_paste() -> None:
    result = pilog_cli("drivers", "bme280", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "options" in out
    row = next(line for line in out.splitlines() if "│ address" in line)
    assert "│ 0x76 | 0x77 " in row  # the choices, written as the datasheet and sample do
    assert "│ 0x76 " in row  # the default
    assert "SDO low / high" in row  # the field's doc
    sample = out[
        out.index("sample config (sample.toml):\n") + len("sample config (sample.toml):\n") :
    ]
    assert sample == (DRIVERS_DIR / "bme280" / "sample.toml").read_text()
    assert parse_config(tomllib.loads(sample), "pasted", {}).sensor[0].driver == "bme280"


def test_drivers_name_shows_choices_and_defaults_as_toml_writes_them() -> None:
    out = pilog_cli("drivers", "bme280", env={"COLUMNS": "200"}).stdout
    row = next(line for line in out.splitlines() if "│ mode " in line)
    assert '│ "forced" | "normal" ' in row
    assert '│ "forced" ' in row  # the default, quoted as in pilog.toml
    assert "Literal" not in out
    described = json.loads(pilog_cli("drivers", "bme280", "--json").stdout)
    mode = next(o for o in described["options"] if o["name"] == "mode")
    assert mode["choices"] == ["forced", "normal"]  # for scripts, as a list
    assert next(o for o in described["options"] if o["name"] == "bus")["choices"] is None


@pytest.mark.parametrize("name", FOLDERS)
def test_drivers_name_types_read_as_a_user_writes_them(name: str) -> None:
    out = pilog_cli("drivers", name, env={"COLUMNS": "300"}).stdout
    table = out[: out.index("sample config")] if "sample config" in out else out
    rows = [line.split("│")[1:-1] for line in table.splitlines() if line.startswith("│")]
    # Type and default, without Python's spelling: Literal[...], typing., None, 'quotes'.
    for python_only in ("Literal[", "typing.", "None", "Annotated", "msgspec", "'"):
        for option, type_, default, _doc in rows:
            cells = f"{type_}│{default}"
            assert python_only not in cells, f"{name}.{option.strip()}: {python_only!r} in {cells}"
    described = json.loads(pilog_cli("drivers", name, "--json").stdout)
    for option in described["options"]:
        assert "Literal" not in option["type"], option
        assert "None" not in option["type"], option


@pytest.mark.parametrize("name", FOLDERS)
def test_drivers_name_json_has_every_option_and_the_sample(name: str) -> None:
    result = pilog_cli("drivers", name, "--json")
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    fields = msgspec.structs.fields(find_driver(name).Options)
    assert [o["name"] for o in described["options"]] == [f.encode_name for f in fields]
    assert all({"type", "default", "doc", "required"} <= set(o) for o in described["options"])
    assert described["sample"] == (DRIVERS_DIR / name / "sample.toml").read_text()


def test_drivers_unknown_name_exits_2_with_a_suggestion() -> None:
    result = pilog_cli("drivers", "bme208")
    assert result.returncode == 2
    assert "unknown driver 'bme208'" in result.stderr
    assert "bme280" in result.stderr
    assert "pilog drivers" in result.stderr
