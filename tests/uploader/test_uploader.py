"""The uploader loop against a real HTTP receiver: batching, the answer table, cursors, replay.

Each test runs a real EventLog (the writer) and one Uploader thread on it, as `pilog run` does.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until

from pilog.config import Config, parse_config
from pilog.consumers import ConsumerGroup
from pilog.datadir import EventLog
from pilog.events import DeadLetter, Event, Gap, Note, Reading
from pilog.history import History
from pilog.testing.receiver import Receiver, ack_lost, fail, retry_after, unauthorized
from pilog.uploader.loop import Uploader
from pilog.uploader.sink import SinkContext
from pilog.uploader.sinks import open_sink

DEVICE = "up-1"


def make_config(data_dir: Path, url: str, log: str = "", **sink: object) -> Config:
    keys = {"batch_max": 100, "linger_ms": 20, "retry_initial_ms": 5, "retry_max": 0.2, **sink}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items())
    text = f"""
    device_id = "{DEVICE}"
    data_dir = "{data_dir}"
    [log]
    fsync_interval_ms = 5
    {log}
    [[sink]]
    name = "api"
    type = "http-json"
    url = "{url}"
    {lines}
    """
    return parse_config(tomllib.loads(text), "test.toml", {})


class Rig:
    """A writer and one uploader on it; readings appended by the test."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.events = EventLog(config)
        self.stop = threading.Event()
        sink_config = config.sink[0]
        context = SinkContext(DEVICE, self.events.epoch_hex, config.data_dir)
        self.uploader = Uploader(
            sink_config, open_sink(sink_config, context), self.events, self.stop
        )

    def id(self, seq: int) -> str:
        return f"{DEVICE}:{self.events.epoch_hex}:{seq}"

    def append(self, n: int, sensor: str = "air") -> list[int]:
        return [self.events.append(Reading(sensor, "synthetic", {"i": i})) for i in range(n)]

    def cursor(self) -> int | None:
        return self.events.read_index(lambda i: i.cursors(), {}).get("sink:api")

    def wait_cursor(self, seq: int) -> None:
        wait_until(lambda: (self.cursor() or 0) >= seq, f"cursor at {seq}")

    def close(self) -> None:
        self.stop.set()
        self.uploader.join(10)
        self.events.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def rig(tmp_path: Path, receiver: Receiver) -> Iterator[Rig]:
    r = Rig(make_config(tmp_path, receiver.url))
    yield r
    r.close()


def test_every_reading_arrives_once_and_the_cursor_passes_everything(
    rig: Rig, receiver: Receiver
) -> None:
    seqs = rig.append(250)
    rig.events.append(Note("not a reading"))
    seqs += rig.append(5)
    rig.uploader.start()
    receiver.wait_for(len(seqs))
    rig.wait_cursor(seqs[-1] + 1)
    assert receiver.ids() == {rig.id(s) for s in seqs}
    assert receiver.duplicates == 0
    assert receiver.validation_errors == []
    assert max(q.n_objects for q in receiver.requests) <= 100
    assert rig.uploader.state.delivered == len(seqs)


def test_a_few_readings_wait_for_linger_then_go_in_one_request(
    rig: Rig, receiver: Receiver
) -> None:
    rig.uploader.start()
    seqs = rig.append(3)
    receiver.wait_for(3)
    assert [q.n_objects for q in receiver.requests] == [3]
    key = receiver.requests[0].idempotency_key
    assert key == f"{DEVICE}:{rig.events.epoch_hex}:{seqs[0]}-{seqs[-1]}"


def test_server_errors_and_retry_after_are_retried_until_acknowledged(
    rig: Rig, receiver: Receiver
) -> None:
    receiver.script(fail(500), fail(503), retry_after(429, 0), fail(502))
    seqs = rig.append(10)
    rig.uploader.start()
    rig.wait_cursor(seqs[-1] + 1)
    assert receiver.ids() == {rig.id(s) for s in seqs}
    assert [q.status for q in receiver.requests][:5] == [500, 503, 429, 502, 200]
    assert rig.uploader.state.attempts == 0  # reset by the ack
    assert rig.uploader.state.last_error is not None
    assert "HTTP 502" in rig.uploader.state.last_error


def test_a_lost_ack_is_resent_and_the_receiver_keeps_one_copy(rig: Rig, receiver: Receiver) -> None:
    receiver.script(ack_lost())
    seqs = rig.append(20)
    rig.uploader.start()
    rig.wait_cursor(seqs[-1] + 1)
    assert receiver.ids() == {rig.id(s) for s in seqs}
    assert receiver.duplicates == 20  # the whole first batch came twice, with the same key
    keys = [q.idempotency_key for q in receiver.requests]
    assert keys[0] == keys[1]


def test_413_splits_the_batch_until_it_fits(rig: Rig, receiver: Receiver) -> None:
    receiver.too_large(16)
    seqs = rig.append(100)
    rig.uploader.start()
    rig.wait_cursor(seqs[-1] + 1)
    assert receiver.ids() == {rig.id(s) for s in seqs}
    accepted = [q.n_objects for q in receiver.requests if q.status == 200]
    assert max(accepted) <= 16
    assert sum(accepted) == 100


def test_a_poison_reading_becomes_a_dead_letter_and_the_rest_is_delivered(
    rig: Rig, receiver: Receiver, tmp_path: Path
) -> None:
    seqs = rig.append(40)
    poison = seqs[17]
    receiver.poison(rig.id(poison))
    rig.uploader.start()
    rig.wait_cursor(seqs[-1] + 1)
    assert receiver.ids() == {rig.id(s) for s in seqs if s != poison}
    rig.events.writer.sync()  # the dead letter is appended, perhaps not yet written
    dead = [e for e in History(tmp_path).events() if isinstance(e.body, DeadLetter)]
    assert len(dead) == 1
    assert dead[0].body.seq == poison
    assert dead[0].body.status == 400
    assert dead[0].body.sink == "api"
    lines = (tmp_path / "deadletter" / "api.ndjson").read_text().splitlines()
    entry = json.loads(lines[0])
    assert entry["event"]["seq"] == poison
    assert entry["event"]["payload"] == {"i": 17}
    assert rig.uploader.state.dead_letters == 1


def test_unauthorized_pauses_the_sink_then_resumes_when_accepted(
    rig: Rig, receiver: Receiver
) -> None:
    receiver.script(unauthorized(401), unauthorized(403))
    seqs = rig.append(5)
    rig.uploader.start()
    rig.wait_cursor(seqs[-1] + 1)
    assert [q.status for q in receiver.requests] == [401, 403, 200]
    assert receiver.ids() == {rig.id(s) for s in seqs}


def test_a_sink_down_for_a_while_resumes_where_it_stopped(
    tmp_path: Path, receiver: Receiver
) -> None:
    port = receiver.port
    url = receiver.url
    receiver.close()  # nothing listens: connection refused
    rig = Rig(make_config(tmp_path, url))
    try:
        seqs = rig.append(30)
        rig.uploader.start()
        wait_until(lambda: rig.uploader.state.attempts >= 3, "a few failed attempts")
        assert rig.cursor() is None
        with Receiver(port=port) as back:
            rig.wait_cursor(seqs[-1] + 1)
            assert back.ids() == {rig.id(s) for s in seqs}
    finally:
        rig.close()


def test_a_restarted_uploader_starts_at_its_committed_cursor(
    tmp_path: Path, receiver: Receiver
) -> None:
    rig = Rig(make_config(tmp_path, receiver.url))
    first = rig.append(50)
    rig.uploader.start()
    rig.wait_cursor(first[-1] + 1)
    rig.close()
    rig = Rig(make_config(tmp_path, receiver.url))
    try:
        second = rig.append(50)
        rig.uploader.start()
        rig.wait_cursor(second[-1] + 1)
        assert receiver.duplicates == 0
        assert len(receiver.ids()) == 100
    finally:
        rig.close()


def test_a_cursor_commit_interval_saves_the_cursor_less_often_and_on_stop(
    tmp_path: Path, receiver: Receiver
) -> None:
    rig = Rig(make_config(tmp_path, receiver.url, cursor_commit_interval="1h"))
    try:
        seqs = rig.append(50)
        rig.uploader.start()
        receiver.wait_for(50)
        wait_until(lambda: rig.uploader.state.position == seqs[-1] + 1, "delivered in state")
        more = rig.append(20)
        receiver.wait_for(70)
        assert rig.cursor() is None  # acknowledged, not yet saved: a crash would re-send
    finally:
        rig.close()
    rig = Rig(make_config(tmp_path, receiver.url, cursor_commit_interval="1h"))
    try:
        assert rig.cursor() == more[-1] + 1  # saved on the way out
    finally:
        rig.close()


def test_a_short_cursor_commit_interval_saves_while_running(
    tmp_path: Path, receiver: Receiver
) -> None:
    rig = Rig(make_config(tmp_path, receiver.url, cursor_commit_interval="200ms"))
    try:
        seqs = rig.append(30)
        rig.uploader.start()
        rig.wait_cursor(seqs[-1] + 1)  # by the idle tick once the interval has passed
        assert receiver.duplicates == 0
    finally:
        rig.close()


def test_replay_while_running_redelivers_the_range_then_resumes(
    rig: Rig, receiver: Receiver
) -> None:
    seqs = rig.append(60)
    rig.uploader.start()
    rig.wait_cursor(seqs[-1] + 1)
    before = receiver.raw_count
    end = seqs[-1] + 1
    rig.events.update_index("test", lambda i: i.request_rewind("sink:api", seqs[10], seqs[19], end))
    wait_until(lambda: receiver.raw_count >= before + 10, "the replayed range")
    wait_until(lambda: rig.events.read_index(lambda i: i.rewinds(), [None]) == [], "replay done")
    assert rig.cursor() == end
    assert receiver.raw_count == before + 10
    assert receiver.duplicates == 10


def test_a_sink_behind_retention_resumes_at_the_oldest_event_and_records_a_gap(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = make_config(tmp_path, receiver.url, log='segment_bytes = "4KiB"\nmax_bytes = "8KiB"')
    rig = Rig(config)
    try:
        rig.events.update_index("test", lambda i: i.set_cursor("sink:api", 0))
        for _ in range(20):
            rig.append(10)
            rig.events.writer.sync()
        oldest = History(tmp_path).first_seq()
        assert oldest is not None
        assert oldest > 0
        rig.uploader.start()
        wait_until(lambda: rig.uploader.state.gaps == 1, "the uploader's gap")
        rig.events.writer.sync()
        gaps = [
            e.body
            for e in History(tmp_path).events()
            if isinstance(e.body, Gap) and "sink:api" in e.body.reason
        ]
        assert len(gaps) == 1
        assert gaps[0].first_seq == 0
        assert gaps[0].last_seq is not None
        assert gaps[0].last_seq >= oldest - 1
    finally:
        rig.close()


def test_a_dead_sink_never_holds_up_a_live_one(tmp_path: Path, receiver: Receiver) -> None:
    with Receiver() as gone:
        dead_url = gone.url  # closed on leaving: connections to it are refused
    text = f"""
    device_id = "{DEVICE}"
    data_dir = "{tmp_path}"
    [log]
    fsync_interval_ms = 5
    [[sink]]
    name = "dead"
    type = "http-json"
    url = "{dead_url}"
    retry_initial_ms = 5
    retry_max = 0.05
    [[sink]]
    name = "live"
    type = "http-json"
    url = "{receiver.url}"
    linger_ms = 10
    """
    config = parse_config(tomllib.loads(text), "test.toml", {})
    events = EventLog(config)
    group = ConsumerGroup.open(config, events)
    group.start()
    try:
        seqs = [events.append(Reading("air", "synthetic", {"i": i})) for i in range(300)]
        receiver.wait_for(len(seqs))

        def states() -> dict[str, dict[str, object]]:
            return {s["name"]: s for s in group.states()}

        wait_until(lambda: states()["sink:live"]["delivered"] == len(seqs), "the acks")
        # The dead sink lingers 1 s before its first attempt; it keeps failing after.
        dead = wait_until(
            lambda: d if (d := states()["sink:dead"])["attempts"] else None,
            "the dead sink's attempts",
        )
        assert dead["next_seq"] is None
        assert dead["delivered"] == 0
    finally:
        group.stop(5)
        events.close()


def test_an_idle_uploader_waits_for_the_log_no_longer_than_the_batch_lingers(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pending batch goes out `linger_ms` after its first reading, not at the next idle
    tick (half a second), which once made every batch of a quiet device linger 0.5 s."""
    rig = Rig(make_config(tmp_path, receiver.url, linger_ms=200))
    try:
        waits: list[float | None] = []
        real = rig.events.writer.wait_durable

        def spy(seq: int, timeout: float | None = None) -> bool:
            waits.append(timeout)
            return real(seq, 0)

        monkeypatch.setattr(rig.events.writer, "wait_durable", spy)
        rig.uploader._wait(0, 0.5)
        assert waits == [0.5]  # nothing pending: the idle tick
        rig.uploader.handle([Event(0, time.time_ns(), 0, b"", Reading("air", "t", {"i": 1}))])
        rig.uploader._wait(1, 0.5)
        assert waits[1] is not None
        assert 0 < waits[1] <= 0.2
    finally:
        rig.close()
