"""The out-of-tree driver of docs/drivers.md runs as shown, so the page cannot rot."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from helpers import Running, pilog

from pilog.drivers import PollingDriver, find_driver
from pilog.testing.drivers import open_driver, run_driver
from pilog.testing.spidev import FakeSpiDev, Mcp3008Sim, StuckBus

DOC = Path(__file__).resolve().parents[2] / "docs" / "drivers.md"
FENCE = re.compile(r'^```python title="(?P<name>[\w.]+)"\n(?P<code>.*?)^```$', re.M | re.S)


def _blocks() -> dict[str, str]:
    return {m["name"]: m["code"] for m in FENCE.finditer(DOC.read_text())}


def _sensor_table() -> str:
    """The page's `[[sensor]]` table that uses the example driver."""
    m = re.search(r"Use it from `pilog.toml`:\n\n```toml\n(.*?)^```$", DOC.read_text(), re.M | re.S)
    assert m, "docs/drivers.md lost its pilog.toml example"
    return m[1]


# Stands in for the spidev package on a box without SPI: an MCP3008 whose CH0 sits at 750 mV,
# which the TMP36 datasheet gives for 25 °C.
FAKE_SPIDEV = """\
from pilog.testing.spidev import FakeSpiDev, Mcp3008Sim


def SpiDev():
    adc = Mcp3008Sim(vref=3.3)
    adc.set_voltage(0, 0.750)
    return FakeSpiDev({(0, 0): adc})
"""


@pytest.fixture
def saved_as_the_page_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp36_driver.py saved next to a pilog.toml holding the page's table; the config's path."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "tmp36_driver.py").write_text(_blocks()["tmp36_driver.py"])
    config = etc / "pilog.toml"
    config.write_text(f"data_dir = {json.dumps(str(tmp_path / 'data'))}\n\n{_sensor_table()}")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    (fakes / "spidev.py").write_text(FAKE_SPIDEV)
    monkeypatch.setenv("PYTHONPATH", str(fakes))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not the config's directory
    return config


@pytest.fixture
def tmp36_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The doc's tmp36_driver.py, importable as `tmp36_driver` for this test only."""
    module = types.ModuleType("tmp36_driver")
    module.__file__ = f"{DOC}#tmp36_driver.py"
    # In sys.modules before exec: msgspec resolves the Struct's annotations through it.
    monkeypatch.setitem(sys.modules, "tmp36_driver", module)
    exec(compile(_blocks()["tmp36_driver.py"], module.__file__, "exec"), module.__dict__)
    return module


def test_the_page_holds_the_driver_and_its_tests() -> None:
    assert set(_blocks()) == {"tmp36_driver.py", "test_tmp36.py"}


def test_the_example_is_a_driver_found_by_module_path(tmp36_module: types.ModuleType) -> None:
    cls = find_driver("tmp36_driver:Tmp36Driver")
    assert cls is tmp36_module.Tmp36Driver
    assert issubclass(cls, PollingDriver)
    assert cls.name == "tmp36"
    assert cls.description


def test_the_example_reads_through_the_fakes(tmp36_module: types.ModuleType) -> None:
    adc = Mcp3008Sim(vref=3.3)
    adc.set_voltage(3, 0.5 + 0.01 * 41.7)  # 41.7 °C
    spi = FakeSpiDev({(0, 1): adc})
    readings = run_driver(
        "tmp36_driver:Tmp36Driver", {"device": 1, "channel": 3}, spidev=spi, polls=2
    )
    code = 284  # floor(1024 * 0.917 / 3.3)
    assert (
        readings
        == [{"temperature_c": round((code * 3.3 / 1023 - 0.5) * 100, 2), "adc_code": code}] * 2
    )
    assert spi.transfers[0][0] == [0x01, 0xB0, 0x00]


def test_the_pages_tests_pass(tmp36_module: types.ModuleType) -> None:
    namespace: dict[str, Any] = {"__name__": "test_tmp36"}
    exec(compile(_blocks()["test_tmp36.py"], f"{DOC}#test_tmp36.py", "exec"), namespace)
    tests = [fn for name, fn in namespace.items() if name.startswith("test_")]
    assert len(tests) == 3
    for test in tests:
        test()


def test_the_example_rejects_an_empty_chip_select_by_its_null_bit(
    tmp36_module: types.ModuleType,
) -> None:
    spi = FakeSpiDev({(0, 0): StuckBus(1)})  # MISO pulled high, no ADC answering
    with open_driver("tmp36_driver:Tmp36Driver", {}, spidev=spi) as driver:
        assert driver.poll() == []
        assert list(driver.rejected) == ["null bit set: no ADC answering"]


def test_check_finds_the_driver_saved_next_to_the_config(saved_as_the_page_says: Path) -> None:
    result = pilog("check", "-c", saved_as_the_page_says)  # as the page says, from elsewhere
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shed" in result.stdout
    outcomes = json.loads(pilog("check", "--json", "-c", saved_as_the_page_says).stdout)
    (shed,) = [o for o in outcomes if o["what"] == "shed"]
    assert shed == {
        "what": "shed",
        "driver": "tmp36_driver:Tmp36Driver",
        "ok": True,
        "detail": "read 1 reading: adc_code, temperature_c",
    }


def test_run_logs_readings_from_the_driver_saved_next_to_the_config(
    saved_as_the_page_says: Path,
) -> None:
    config = saved_as_the_page_says
    with Running("run", "-c", config) as run:
        with Running("tail", "-f", "--json", "--sensor", "shed", "-c", config) as tail:
            line = tail.stdout.wait_for(lambda line: "temperature_c" in line, "a shed reading")
        run.stop()
    event = json.loads(line)
    values = event.get("values") or event.get("payload")
    assert values == {"temperature_c": pytest.approx(25, abs=0.5), "adc_code": 232}
