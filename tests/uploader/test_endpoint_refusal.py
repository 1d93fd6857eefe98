"""An endpoint that refuses every reading alike pauses the sink; it never dead-letters the stream.

Against a real VictoriaMetrics given the full write path as its base URL (HTTP 400 "unsupported
path") and the receiver answering 404 to everything: nothing is dead-lettered, the cursor stays,
the state says paused and why; after the fix (a restarted uploader with the corrected config, or
`wake` as `pilog retry` does) every reading arrives exactly once. Readings refused while others
are accepted stay dead letters.
"""

from __future__ import annotations

import logging
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import wait_until

from pilog.config import Config, parse_config
from pilog.datadir import EventLog
from pilog.events import DeadLetter, Reading
from pilog.history import History
from pilog.testing.receiver import Receiver, fail
from pilog.uploader.loop import Uploader
from pilog.uploader.sink import SinkContext
from pilog.uploader.sinks import open_sink

if TYPE_CHECKING:
    from conftest import VictoriaMetrics

DEVICE = "up-1"
PAUSE_S = 3600  # retry_max: without a fix or a wake, nothing would be sent again in a test


def make_config(data_dir: Path, sink: str) -> Config:
    text = f"""
    device_id = "{DEVICE}"
    data_dir = "{data_dir}"
    [log]
    fsync_interval_ms = 5
    [[sink]]
    name = "out"
    batch_max = 50
    linger_ms = 20
    retry_initial_ms = 5
    retry_max = {PAUSE_S}
    {sink}
    """
    return parse_config(tomllib.loads(text), "test.toml", {})


def http_json(url: str) -> str:
    return f'type = "http-json"\nurl = "{url}"'


def influx_v2(url: str) -> str:
    return f'type = "influx-line"\nurl = "{url}"\napi = "v2"\norg = "acme"\nbucket = "pilog"'


class Box:
    """A writer and one uploader on it, as `pilog run` has them."""

    def __init__(self, config: Config, *, start: bool = True) -> None:
        self.events = EventLog(config)
        self.stop = threading.Event()
        context = SinkContext(DEVICE, self.events.epoch_hex, config.data_dir)
        self.uploader = Uploader(
            config.sink[0], open_sink(config.sink[0], context), self.events, self.stop
        )
        if start:
            self.uploader.start()

    def append(self, n: int) -> list[int]:
        return [self.events.append(Reading("air", "synthetic", {"i": i})) for i in range(n)]

    def id(self, seq: int) -> str:
        return f"{DEVICE}:{self.events.epoch_hex}:{seq}"

    def cursor(self) -> int | None:
        return self.events.read_index(lambda i: i.cursors(), {}).get("sink:out")

    def wait_paused(self) -> None:
        wait_until(lambda: self.uploader.state.paused_reason == "endpoint", "the endpoint pause")

    def dead_letters(self) -> list[DeadLetter]:
        self.events.writer.sync()
        history = History(self.events.paths.root)
        return [e.body for e in history.events() if isinstance(e.body, DeadLetter)]

    def close(self) -> None:
        self.stop.set()
        assert self.uploader.join(30)
        self.events.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_404_for_everything_pauses_with_nothing_dead_lettered_and_wake_delivers_all_once(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.always(fail(404, '{"error": "no such route"}'))
    box = Box(make_config(tmp_path, http_json(receiver.url)))
    try:
        seqs = box.append(40)
        with caplog.at_level(logging.ERROR, "pilog.uploader"):
            box.wait_paused()
        state = box.uploader.state
        assert state.state == "paused"
        assert state.dead_letters == 0
        assert box.dead_letters() == []
        assert not (tmp_path / "deadletter" / "out.ndjson").exists()
        assert box.cursor() is None  # nothing passed
        assert state.position == seqs[0]
        assert receiver.ids() == set()
        (line,) = [r.getMessage() for r in caplog.records if "refuses every reading" in r.message]
        assert receiver.url in line
        assert "HTTP 404" in line
        assert "no such route" in line
        assert "Check the url" in line

        receiver.always(None)
        assert box.uploader.wake()  # what `pilog retry out` asks for
        wait_until(lambda: box.cursor() == seqs[-1] + 1, "every reading delivered")
        assert receiver.ids() == {box.id(s) for s in seqs}
        assert receiver.duplicates == 0
        assert box.dead_letters() == []
        assert state.paused_reason is None
        assert state.recovered_ns is not None
    finally:
        box.close()


def test_a_wrong_influx_url_on_victoria_metrics_pauses_then_the_corrected_config_delivers_once(
    tmp_path: Path, victoria_metrics: VictoriaMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"{victoria_metrics.url}/api/v2/write"  # the write path, where the base URL belongs
    box = Box(make_config(tmp_path, influx_v2(wrong)))
    try:
        seqs = box.append(40)
        with caplog.at_level(logging.ERROR, "pilog.uploader"):
            box.wait_paused()
        assert box.uploader.state.dead_letters == 0
        assert box.cursor() is None
        (line,) = [r.getMessage() for r in caplog.records if "refuses every reading" in r.message]
        assert wrong in line
        assert "HTTP 400" in line
        assert "unsupported path" in line
        assert "base URL" in line
    finally:
        box.close()
    assert box.dead_letters() == []

    box = Box(make_config(tmp_path, influx_v2(victoria_metrics.url)))  # pilog restarted, fixed
    try:
        wait_until(lambda: box.cursor() == seqs[-1] + 1, "every reading delivered")
    finally:
        box.close()
    series = victoria_metrics.wait_for_series(f'{{device="{DEVICE}"}}', 1)
    samples = sum(len(s["values"]) for s in series)
    assert samples == len(seqs)  # each reading once: nothing was written before the fix
    assert box.dead_letters() == []


def test_bad_readings_at_the_head_of_a_batch_are_dead_letters_not_a_pause(
    tmp_path: Path, receiver: Receiver
) -> None:
    box = Box(make_config(tmp_path, http_json(receiver.url)), start=False)
    try:
        seqs = box.append(40)  # before the start: the first batch starts with the bad ones
        bad = set(seqs[:4])
        receiver.poison(lambda obj: obj["seq"] in bad)
        box.uploader.start()
        wait_until(lambda: box.cursor() == seqs[-1] + 1, "the batch passed")
        assert {d.seq for d in box.dead_letters()} == bad
        assert receiver.ids() == {box.id(s) for s in seqs if s not in bad}
        assert box.uploader.state.paused_reason is None
    finally:
        box.close()


def test_a_lone_bad_reading_is_retried_with_the_next_ones_then_dead_lettered_without_a_pause(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.poison(lambda obj: obj["payload"] == {"bad": 1})
    box = Box(make_config(tmp_path, http_json(receiver.url)))
    try:
        bad = box.events.append(Reading("air", "synthetic", {"bad": 1}))
        wait_until(lambda: box.uploader.state.attempts >= 1, "the lone reading refused")
        assert box.uploader.state.paused_reason is None  # too little to blame the endpoint
        good = box.append(3)
        wait_until(lambda: box.cursor() == good[-1] + 1, "the readings after it delivered")
        assert [d.seq for d in box.dead_letters()] == [bad]
        assert receiver.ids() == {box.id(s) for s in good}
        assert box.uploader.state.paused_reason is None
    finally:
        box.close()
