"""The geiger driver: MightyOhm report lines against the corpus, and a real pty carrying them."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import CORPUS

from pilog import runtime as runtime_mod
from pilog.config import parse_config
from pilog.datadir import EventLog
from pilog.drivers.base import Payload, PollingDriver
from pilog.drivers.geiger.driver import decode_report
from pilog.drivers.serialport import BadLineError, PortLostError
from pilog.events import DriverFailed, DriverStarted, Reading
from pilog.history import History
from pilog.runtime import Runtime
from pilog.testing.clock import FakeClock
from pilog.testing.drivers import open_driver
from pilog.testing.pty import SerialPty

WAIT_S = 30.0  # a bound for waiting on the pty, never a measured result


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"corpus file {path} is absent (see ../shared/corpus/SOURCES.md)")
    return path


def expected_lines() -> list[dict[str, Any]]:
    data = json.loads(corpus_file("geiger_expected.json").read_text())
    lines: list[dict[str, Any]] = data["lines"]
    return lines


def expected_payload(e: dict[str, Any]) -> Payload:
    return {"cps": e["cps"], "cpm": e["cpm"], "usv_per_h": e["usv_per_hr"], "mode": e["mode"]}


def read_until(driver: PollingDriver, count: int, rejected: int = 0) -> list[Payload]:
    """Read until `count` readings and `rejected` rejects came (or the wait bound passed)."""
    out: list[Payload] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and (len(out) < count or driver.rejected.total() < rejected):
        out.extend(driver.poll())
    return out


# -- decoder against the corpus -----------------------------------------------------------


def test_every_corpus_line_decodes_as_expected() -> None:
    for line in expected_lines():
        where = f"line {line['line']}: {line['raw']!r}"
        if line["kind"] == "reading":
            assert decode_report(line["raw"]) == expected_payload(line["expected"]), where
        elif line["kind"] == "banner":
            assert decode_report(line["raw"]) is None, where
        else:
            with pytest.raises(BadLineError, match="not a MightyOhm report"):
                decode_report(line["raw"])


def test_each_mode_and_the_published_examples() -> None:
    assert decode_report("CPS, 0, CPM, 13, uSv/hr, 0.07, SLOW") == {
        "cps": 0,
        "cpm": 13,
        "usv_per_h": 0.07,
        "mode": "SLOW",
    }
    fast = decode_report("CPS, 27, CPM, 1104, uSv/hr, 6.29, FAST")
    inst = decode_report("CPS, 403, CPM, 24180, uSv/hr, 137.82, INST")
    assert fast is not None
    assert inst is not None
    assert (fast["mode"], fast["usv_per_h"]) == ("FAST", 6.29)
    assert (inst["cps"], inst["cpm"], inst["mode"]) == (403, 24180, "INST")


@pytest.mark.parametrize(
    "raw",
    [
        "M, 2, uSv/hr, 0.01, SLOW",  # port opened mid-line
        "CPS, 1, CPM, 3, uSv/hr, 0.01",  # truncated
        "CPS, 1, CPM, 3, uSv/hr, 0.01, SLOWCPS, 1, CPM, 3, uSv/hr, 0.01, SLOW",  # glued
        "CPS, -1, CPM, 3, uSv/hr, 0.01, SLOW",
        "CPS, 1, CPM, 3, uSv/hr, 0.1, SLOW",  # the firmware always prints two decimals
        "CPS, 1, CPM, 3, uSv/hr, 0.01, slow",
        "CPS, 70000, CPM, 3, uSv/hr, 0.01, SLOW",  # beyond the firmware's 16-bit counter
        "#$%&garbage",
        "",
    ],
)
def test_garbage_is_rejected(raw: str) -> None:
    with pytest.raises(BadLineError):
        decode_report(raw)


# -- the driver on a real pty ---------------------------------------------------------------


def test_captured_stream_over_a_pty_gives_every_report_in_order() -> None:
    lines = expected_lines()
    wanted = [expected_payload(x["expected"]) for x in lines if x["kind"] == "reading"]
    partial = sum(1 for x in lines if x["kind"] == "partial")
    with SerialPty() as pty, open_driver("geiger", {"port": pty.path}) as driver:
        data = corpus_file("geiger.txt").read_bytes()
        writer = threading.Thread(target=pty.write, args=(data,), daemon=True)
        writer.start()
        got = read_until(driver, len(wanted), partial)
        writer.join(WAIT_S)
        assert got == wanted
        assert driver.rejected == {"not a MightyOhm report line": partial}  # banners are not


def test_nul_noise_and_a_stall_mid_report_over_a_pty() -> None:
    with SerialPty() as pty, open_driver("geiger", {"port": pty.path}) as driver:
        pty.write(b"\x00\x00CPS, 1, CPM, 3, uSv/hr, 0.01, SLOW\r\n")  # NULs at power-up
        pty.write(b"CPS, 1, CPM, \x00\x00, uSv/hr, 0.01, SLOW\r\n")  # characters lost
        pty.write(b"\xc3\x28\r\nCPS, 2, CPM")
        first = read_until(driver, 1, rejected=2)
        assert first == [{"cps": 1, "cpm": 3, "usv_per_h": 0.01, "mode": "SLOW"}]
        assert driver.poll() == []  # the counter stalls mid-line: a read returns empty
        pty.write(b", 5, uSv/hr, 0.02, SLOW\r\n")
        assert read_until(driver, 1) == [{"cps": 2, "cpm": 5, "usv_per_h": 0.02, "mode": "SLOW"}]
        assert driver.rejected == {"NUL bytes inside a line": 1, "non-printable bytes in line": 1}


def test_unplugged_counter_raises_and_a_reopen_after_replug_reads_again(tmp_path: Path) -> None:
    report = b"CPS, 0, CPM, 13, uSv/hr, 0.07, SLOW\r\n"
    link = tmp_path / "geiger"
    with SerialPty(link=link) as pty:
        with open_driver("geiger", {"port": str(link)}) as driver:
            pty.write(report)
            assert len(read_until(driver, 1)) == 1
            pty.unplug()
            with pytest.raises(PortLostError, match="lost"):
                read_until(driver, 1)
        pty.replug()
        with open_driver("geiger", {"port": str(link)}) as driver:
            # A re-plugged counter powers up: banner first, then reports.
            pty.write(b"mightyohm.com Geiger Counter 1.00\r\nhttp://mightyohm.com/geiger\r\n")
            pty.write(report)
            assert read_until(driver, 1) == [
                {"cps": 0, "cpm": 13, "usv_per_h": 0.07, "mode": "SLOW"}
            ]
            assert driver.rejected.total() == 0


@pytest.mark.timeout(120)  # a hang here must fail with a stack dump, not stall the suite
def test_runtime_reopens_a_counter_that_was_unplugged_and_plugged_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_mod, "RESTART_BACKOFF_MIN_S", 0.02)
    link = tmp_path / "dev" / "geiger"
    text = f"""
    data_dir = "{tmp_path / "data"}"
    [log]
    fsync = "never"
    [[sensor]]
    name = "geiger"
    driver = "geiger"
    port = "{link}"
    """
    config = parse_config(tomllib.loads(text), "test.toml", {})
    report = b"CPS, 0, CPM, 13, uSv/hr, 0.07, SLOW\r\n"
    with SerialPty(link=link) as pty:
        events = EventLog(config, clock=FakeClock())
        rt = Runtime(config, events, FakeClock())

        done = threading.Event()
        stop = threading.Event()
        seen: list[str] = []

        def device() -> None:
            """Plugged, unplugged, plugged back: on its own thread, so a full tty never blocks
            the runtime's loop."""
            phase, readings_at_replug = "plugged", 0
            while not stop.is_set():
                health = rt.health.get("geiger")
                if health is not None:
                    if phase == "plugged" and health.readings >= 1:
                        pty.unplug()
                        phase = "unplugged"
                    elif phase == "unplugged" and health.failures >= 1:
                        readings_at_replug = health.readings
                        pty.replug()
                        phase = "replugged"
                    elif phase == "replugged" and health.readings > readings_at_replug:
                        done.set()
                        return
                    elif phase != "unplugged" and health.state == "running":
                        # Opening a port flushes its input: repeat the report until one is read.
                        pty.write(report)
                    seen[:] = [phase, health.state]
                stop.wait(0.01)

        async def main() -> None:
            task = asyncio.create_task(rt.run())
            deadline = time.monotonic() + WAIT_S
            while not done.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            rt.stop()
            await task

        driver_thread = threading.Thread(target=device, daemon=True)
        driver_thread.start()
        try:
            asyncio.run(main())
        finally:
            stop.set()
            events.close()
        assert done.is_set(), f"stuck at {seen}"
    history = list(History(config.data_dir).events(0))
    kinds = [type(e.body) for e in history]
    assert kinds.count(DriverStarted) == 2, kinds
    failed = [e.body for e in history if isinstance(e.body, DriverFailed)]
    assert failed
    assert "lost" in failed[0].error
    readings = [e.body for e in history if isinstance(e.body, Reading)]
    assert len(readings) >= 2
    assert readings[0].values == {"cps": 0, "cpm": 13, "usv_per_h": 0.07, "mode": "SLOW"}
