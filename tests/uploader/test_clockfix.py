"""Readings stamped before the wall clock was set (a Pi without RTC booting in 1970) are held
back and sent with corrected times once the clock steps; the log keeps the originals.
Plausible stamps are sent as they are, whatever the batching (pilog/consumers/clock.py)."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until

from pilog.config import parse_config
from pilog.consumers.clock import PLAUSIBLE_AFTER_NS
from pilog.datadir import EventLog
from pilog.events import ClockStep, Reading, rfc3339
from pilog.history import History
from pilog.testing.clock import FakeClock
from pilog.testing.receiver import Receiver
from pilog.uploader.loop import Uploader
from pilog.uploader.sink import SinkContext
from pilog.uploader.sinks import open_sink

BOOT_WALL_NS = 5 * 10**9  # 1970-01-01T00:00:05Z: the clock of a board without RTC
NTP_WALL_NS = PLAUSIBLE_AFTER_NS + 21 * 86400 * 10**9 + 123_456_000
S = 10**9


class Box:
    """A data dir written with a fake clock, and an uploader on it."""

    def __init__(self, tmp_path: Path, url: str, linger_ms: int = 20, batch_max: int = 100) -> None:
        text = f"""
        device_id = "rtcless"
        data_dir = "{tmp_path}"
        [log]
        fsync_interval_ms = 5
        [[sink]]
        name = "api"
        type = "http-json"
        url = "{url}"
        linger_ms = {linger_ms}
        batch_max = {batch_max}
        """
        self.config = parse_config(tomllib.loads(text), "test.toml", {})
        self.clock = FakeClock(wall_ns=BOOT_WALL_NS, mono_ns=40 * S)
        self.events = EventLog(self.config, clock=self.clock)
        self.stop = threading.Event()
        sink = self.config.sink[0]
        ctx = SinkContext("rtcless", self.events.epoch_hex, tmp_path)
        self.uploader = Uploader(sink, open_sink(sink, ctx), self.events, self.stop)

    def reading(self, i: int) -> int:
        self.clock.advance(S)
        return self.events.append(Reading("air", "synthetic", {"i": i}))

    def ntp_sync(self, to_wall_ns: int) -> int:
        before = self.clock.wall_ns()
        self.clock.step_wall(to_wall_ns - before)
        return self.events.append(ClockStep(to_wall_ns - before, before, to_wall_ns))

    def close(self) -> None:
        self.stop.set()
        self.uploader.join(10)
        self.events.close()


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def by_seq(rx: Receiver) -> dict[int, str]:
    return {o["seq"]: o["timestamp"] for o in rx.events.values()}


def test_readings_before_ntp_are_held_then_sent_with_corrected_times(
    tmp_path: Path, rx: Receiver
) -> None:
    box = Box(tmp_path, rx.url)
    try:
        box.uploader.start()
        early = [box.reading(i) for i in range(5)]
        wait_until(lambda: box.uploader.state.state == "holding", "the uploader to hold")
        assert rx.ids() == set()
        box.clock.advance(3 * S)
        step = box.ntp_sync(NTP_WALL_NS)
        late = [box.reading(i) for i in range(5, 8)]
        rx.wait_for(8)
        sent = by_seq(rx)
        # corrected = step time - (step monotonic - reading monotonic): readings were 1 s
        # apart and the last one 3 s before the step.
        for k, seq in enumerate(early):
            assert sent[seq] == rfc3339(NTP_WALL_NS - (3 + 4 - k) * S)
        for k, seq in enumerate(late):
            assert sent[seq] == rfc3339(NTP_WALL_NS + (k + 1) * S)
        box.events.writer.sync()
        logged = {e.seq: e.ts_ns for e in History(tmp_path).events()}
        assert [logged[s] for s in early] == [BOOT_WALL_NS + (k + 1) * S for k in range(5)]
        assert step in logged
    finally:
        box.close()


def test_readings_of_a_boot_that_never_got_the_time_are_sent_as_recorded(
    tmp_path: Path, rx: Receiver
) -> None:
    box = Box(tmp_path, rx.url)
    try:
        early = [box.reading(i) for i in range(3)]
        box.events.boot_id = bytes(16)  # rebooted; the new boot has an RTC
        box.clock.step_wall(NTP_WALL_NS - box.clock.wall_ns())
        later = box.reading(3)
        box.uploader.start()
        rx.wait_for(4)
        sent = by_seq(rx)
        assert [sent[s] for s in early] == [rfc3339(BOOT_WALL_NS + (k + 1) * S) for k in range(3)]
        assert sent[later] == rfc3339(NTP_WALL_NS + S)
        assert box.uploader.state.extra["uncorrected"] == 3
    finally:
        box.close()


@pytest.mark.parametrize("batch_max", [1, 4])
def test_plausible_readings_keep_their_stamps_however_they_are_batched(
    tmp_path: Path, rx: Receiver, batch_max: int
) -> None:
    box = Box(tmp_path, rx.url, linger_ms=60_000, batch_max=batch_max)
    box.clock.step_wall(NTP_WALL_NS - box.clock.wall_ns())  # plausible, but 30 s slow
    try:
        box.uploader.start()
        waiting = [box.reading(i) for i in range(3)]
        box.ntp_sync(box.clock.wall_ns() + 30 * S)
        after = box.reading(3)  # the fourth reading fills the batch: it goes out now
        rx.wait_for(4)
    finally:
        box.close()
    sent = by_seq(rx)
    # Whether they were still waiting in a batch when the step came makes no difference.
    assert [sent[s] for s in waiting] == [rfc3339(NTP_WALL_NS + (k + 1) * S) for k in range(3)]
    assert sent[after] == rfc3339(NTP_WALL_NS + (4 + 30) * S)
