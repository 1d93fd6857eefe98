"""The runtime: healthy drivers keep going while others raise or hang; clock steps are logged."""

from __future__ import annotations

import asyncio
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from pilog import runtime as runtime_mod
from pilog.config import Config, parse_config
from pilog.datadir import EventLog
from pilog.drivers import Payload, PollingDriver
from pilog.events import ClockStep, DriverFailed, DriverStarted, Event, Gap, Reading
from pilog.history import History
from pilog.runtime import Runtime
from pilog.testing.clock import FakeClock

RELEASE_HUNG = threading.Event()


class Raising(PollingDriver):
    name: ClassVar[str] = "raising"

    def poll(self) -> list[Payload]:
        raise OSError(121, "Remote I/O error")


class Hanging(PollingDriver):
    name: ClassVar[str] = "hanging"

    def poll(self) -> list[Payload]:
        RELEASE_HUNG.wait(30)  # a device stuck in a syscall
        return []


class FailsToOpen(PollingDriver):
    name: ClassVar[str] = "fails_to_open"

    def open(self) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/dev/ttyUSB9")

    def poll(self) -> list[Payload]:
        raise AssertionError("never polled: it never opens")


def config_for(tmp_path: Path, sensors: str) -> Config:
    text = f"""
    device_id = "rt"
    data_dir = "{tmp_path}"
    [log]
    fsync = "never"
    segment_bytes = "1MiB"
    max_bytes = "16MiB"
    {sensors}
    """
    return parse_config(tomllib.loads(text), "test.toml", {})


def sensor(name: str, driver: str, interval_ms: int, extra: str = "") -> str:
    return f'[[sensor]]\nname = "{name}"\ndriver = "{driver}"\ninterval_ms = {interval_ms}\n{extra}'


def run_until(
    config: Config, clock: object, done: Callable[[Runtime], bool], deadline_s: float = 30
) -> tuple[list[Event], Runtime]:
    events = EventLog(config, clock=clock)  # type: ignore[arg-type]
    rt = Runtime(config, events, clock)  # type: ignore[arg-type]
    try:
        drive(rt, events, lambda: done(rt), deadline_s)
    finally:
        RELEASE_HUNG.set()
    assert done(rt), "condition not reached before the deadline"
    return list(History(config.data_dir).events(0)), rt


def drive(rt: Runtime, events: EventLog, done: Callable[[], bool], deadline_s: float = 30) -> None:
    """Run `rt` until `done()` (checked every 10 ms) or the deadline, then stop and close."""

    async def main() -> None:
        task = asyncio.create_task(rt.run())
        limit = time.monotonic() + deadline_s
        while not done() and time.monotonic() < limit:
            await asyncio.sleep(0.01)
        rt.stop()
        await task

    try:
        asyncio.run(main())
    finally:
        events.close()


def test_failing_and_hanging_drivers_are_restarted_with_backoff_beside_a_healthy_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_mod, "RESTART_BACKOFF_MIN_S", 0.02)
    RELEASE_HUNG.clear()
    mod = __name__
    config = config_for(
        tmp_path,
        "\n".join(
            [
                sensor("good", "synthetic", 10),
                sensor("bad", f"{mod}:Raising", 10),
                sensor("stuck", f"{mod}:Hanging", 10, "timeout_ms = 100"),
                sensor("absent", f"{mod}:FailsToOpen", 10),
            ]
        ),
    )

    def done(rt: Runtime) -> bool:
        h = rt.health
        return (
            len(h) == 4
            and h["good"].readings >= 20
            and h["bad"].failures >= 3
            and h["stuck"].failures >= 2
            and h["absent"].failures >= 3
        )

    events, rt = run_until(config, FakeClock(), done)
    failed = [e.body for e in events if isinstance(e.body, DriverFailed)]
    by_sensor = {s: [f for f in failed if f.sensor == s] for s in ("bad", "stuck", "absent")}
    assert "Remote I/O error" in by_sensor["bad"][0].error
    assert "no answer within 0.1s" in by_sensor["stuck"][0].error
    assert "/dev/ttyUSB9" in by_sensor["absent"][0].error
    # A streak of the same failure is reported once; the restarts back off exponentially.
    assert len(by_sensor["bad"]) == 1
    assert len(by_sensor["absent"]) == 1
    assert by_sensor["bad"][0].restart_in_s == 0.02
    assert rt.health["absent"].restart_in_s == 0.02 * 2 ** (rt.health["absent"].failures - 1)
    good = [e.body for e in events if isinstance(e.body, Reading) and e.body.sensor == "good"]
    assert len(good) >= 20
    assert [e.seq for e in events] == list(range(len(events)))  # dense, in order
    started = {e.body.sensor for e in events if isinstance(e.body, DriverStarted)}
    assert {"good", "bad", "stuck"} <= started
    assert "absent" not in started


def test_interval_zero_polls_as_fast_as_the_log_takes_readings(tmp_path: Path) -> None:
    config = config_for(tmp_path, sensor("fast", "synthetic", 0, "batch = 10"))
    events, _ = run_until(
        config, FakeClock(), lambda rt: "fast" in rt.health and rt.health["fast"].readings >= 5000
    )
    values = [e.body.values for e in events if isinstance(e.body, Reading)]
    assert len(values) >= 5000
    assert set(values[0]) == {"temperature_c", "humidity_pct", "pressure_hpa"}


def test_wall_clock_step_is_recorded_as_clock_step_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_mod, "CLOCK_CHECK_INTERVAL_S", 0.01)
    clock = FakeClock()
    hour = 3600 * 1_000_000_000
    stepped = threading.Event()

    def done(rt: Runtime) -> bool:
        if not stepped.is_set():
            if "s" in rt.health and rt.health["s"].readings:  # the clock watch is running
                clock.step_wall(hour)  # NTP's first sync on a board without RTC
                stepped.set()
            return False
        return _has_step(tmp_path)

    config = config_for(tmp_path, sensor("s", "synthetic", 1000))
    events, _ = run_until(config, clock, done)
    steps = [e.body for e in events if isinstance(e.body, ClockStep)]
    assert len(steps) == 1
    assert steps[0].step_ns == hour
    assert steps[0].wall_after_ns - steps[0].wall_before_ns == hour


def _has_step(data_dir: Path) -> bool:
    return any(isinstance(e.body, ClockStep) for e in History(data_dir).events(0))


def test_readings_refused_by_a_full_log_are_counted_then_recorded_as_a_gap(
    tmp_path: Path,
) -> None:
    text = f"""
    device_id = "rt"
    data_dir = "{tmp_path}"
    [log]
    fsync = "never"
    fsync_interval_ms = 5
    segment_bytes = "4KiB"
    max_bytes = "16KiB"
    on_full = "block"
    {sensor("fast", "synthetic", 1)}
    """
    config = parse_config(tomllib.loads(text), "test.toml", {})
    clock = FakeClock()
    events = EventLog(config, clock=clock)
    assert events.index is not None
    events.index.set_cursor("sink:stalled", 0)  # a consumer that holds the oldest segment
    rt = Runtime(config, events, clock)
    released = threading.Event()

    def done() -> bool:
        health = rt.health.get("fast")
        if health and health.dropped >= 10 and not released.is_set():
            assert events.index is not None
            events.index.set_cursor("sink:stalled", events.writer.next_seq)
            released.set()
        return released.is_set() and bool(_gaps(tmp_path))

    drive(rt, events, done)
    gaps = _gaps(tmp_path)
    assert len(gaps) == 1
    assert gaps[0].sensor == "fast"
    assert gaps[0].count >= 10
    assert gaps[0].first_seq is None


def _gaps(data_dir: Path) -> list[Gap]:
    return [e.body for e in History(data_dir).events(0) if isinstance(e.body, Gap)]


def test_flat_out_sensor_waits_for_the_disk_instead_of_dropping(tmp_path: Path) -> None:
    text = f"""
    data_dir = "{tmp_path}"
    [log]
    fsync = "never"
    fsync_interval_ms = 2
    {sensor("fast", "synthetic", 0, "batch = 50")}
    """
    config = parse_config(tomllib.loads(text), "test.toml", {})
    clock = FakeClock()
    events = EventLog(config, clock=clock)
    events.writer._max_pending_bytes = 4000  # a disk far slower than the sensor
    rt = Runtime(config, events, clock)

    drive(rt, events, lambda: "fast" in rt.health and rt.health["fast"].readings >= 5000)
    history = list(History(tmp_path).events(0))
    readings = [e for e in history if isinstance(e.body, Reading)]
    assert len(readings) >= 5000
    assert rt.health["fast"].dropped == 0
    assert not [e for e in history if isinstance(e.body, Gap)]


def test_scheduled_sensor_keeps_its_readings_beside_a_flat_out_one(tmp_path: Path) -> None:
    text = f"""
    data_dir = "{tmp_path}"
    [log]
    fsync = "never"
    fsync_interval_ms = 2
    {sensor("flood", "synthetic", 0, "batch = 50")}
    {sensor("tick", "synthetic", 5)}
    """
    config = parse_config(tomllib.loads(text), "test.toml", {})
    clock = FakeClock()
    events = EventLog(config, clock=clock)
    events.writer._max_pending_bytes = 8000  # a disk far slower than the flooding sensor
    rt = Runtime(config, events, clock)

    drive(rt, events, lambda: "tick" in rt.health and rt.health["tick"].readings >= 100)
    assert rt.health["tick"].readings >= 100
    assert rt.health["flood"].readings > rt.health["tick"].readings  # it did flood
    assert rt.health["tick"].dropped == 0  # the flooder left room for the scheduled sensor
    assert not [e for e in History(tmp_path).events(0) if isinstance(e.body, Gap)]
