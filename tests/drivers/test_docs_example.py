"""The out-of-tree driver of docs/drivers.md runs as shown, so the page cannot rot."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pilog.drivers import PollingDriver, find_driver
from pilog.testing.drivers import open_driver, run_driver
from pilog.testing.spidev import FakeSpiDev, Mcp3008Sim, StuckBus

DOC = Path(__file__).resolve().parents[2] / "docs" / "drivers.md"
FENCE = re.compile(r'^```python title="(?P<name>[\w.]+)"\n(?P<code>.*?)^```$', re.M | re.S)


def _blocks() -> dict[str, str]:
    return {m["name"]: m["code"] for m in FENCE.finditer(DOC.read_text())}


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
