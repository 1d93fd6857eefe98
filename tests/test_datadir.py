"""The data dir: one writer, losses recorded as Gap events, repairs as Repair events."""

from __future__ import annotations

import itertools
import json
import os
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from pilog.config import Config, parse_config
from pilog.datadir import EventLog
from pilog.errors import LockedError, LogFullError
from pilog.events import Gap, Reading, Repair
from pilog.history import History
from pilog.testing.clock import FakeClock


def make_config(data_dir: Path, on_full: str = "drop_oldest") -> Config:
    text = f"""
    device_id = "dd"
    data_dir = "{data_dir}"
    [log]
    segment_bytes = "4KiB"
    max_bytes = "16KiB"
    on_full = "{on_full}"
    """
    return parse_config(tomllib.loads(text), "test.toml", {})


def reading(i: int) -> Reading:
    return Reading("s", "synthetic", {"i": i, "pad": "x" * 60})


def test_second_writer_is_refused_naming_the_pid_of_the_first(tmp_path: Path) -> None:
    first = EventLog(make_config(tmp_path))
    with pytest.raises(LockedError, match=rf"in use by pid {os.getpid()}"):
        EventLog(make_config(tmp_path))
    first.close()
    EventLog(make_config(tmp_path)).close()  # released on close


def test_drop_oldest_records_the_lost_range_as_a_gap_event_and_incident(tmp_path: Path) -> None:
    events = EventLog(make_config(tmp_path), clock=FakeClock())
    assert events.index is not None
    events.index.set_cursor("sink:slow", 0)  # a consumer that never moves
    for i in range(1000):
        events.append(reading(i))
        if i % 50 == 0:
            events.writer.sync()
    events.writer.sync()
    sizes = sum(p.stat().st_size for p in (tmp_path / "log").iterdir())
    assert sizes <= 16 * 1024 + 4 * 1024  # max_bytes plus one segment
    incidents = events.index.incidents(limit=1000)
    events.close()

    history = History(tmp_path)
    first_kept = history.first_seq()
    assert first_kept is not None
    assert first_kept > 0
    # The index remembers every drop: together they cover exactly the seqs that are gone.
    details = [json.loads(i.detail) for i in incidents]
    ranges = sorted((d["first_seq"], d["last_seq"]) for d in details)
    assert ranges[0][0] == 0
    for (_, last), (first, _) in itertools.pairwise(ranges):
        assert first == last + 1
    assert ranges[-1][1] == first_kept - 1
    # A Gap event can itself be dropped later; those still in the log are the latest drops.
    gaps = [
        (e.body.first_seq, e.body.last_seq) for e in history.events(0) if isinstance(e.body, Gap)
    ]
    assert gaps
    assert gaps == ranges[-len(gaps) :]


def test_block_refuses_appends_while_a_consumer_holds_the_oldest_segment(tmp_path: Path) -> None:
    events = EventLog(make_config(tmp_path, on_full="block"), clock=FakeClock())
    assert events.index is not None
    events.index.set_cursor("sink:slow", 0)
    refused = 0
    for i in range(1000):
        try:
            events.append(reading(i))
        except LogFullError:
            refused += 1
        if i % 20 == 0:
            events.writer.sync()  # blocked rotation keeps the batch queued; not an error
    assert refused > 0
    assert events.writer.full
    # The consumer catches up: the writer may delete what it has passed and takes appends again.
    events.index.set_cursor("sink:slow", events.writer.next_seq)
    events.writer._wake.set()
    assert _eventually(lambda: not events.writer.full)
    events.append(reading(-1))
    events.writer.sync()
    events.close()
    seqs = [e.seq for e in History(tmp_path).events(0)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert not any(isinstance(e.body, Gap) for e in History(tmp_path).events(0))


def test_torn_tail_becomes_a_repair_event_and_incident(tmp_path: Path) -> None:
    events = EventLog(make_config(tmp_path))
    for i in range(5):
        events.append(reading(i))
    events.close()
    segment = sorted((tmp_path / "log").iterdir())[-1]
    data = segment.read_bytes().rstrip(b"\0")
    with segment.open("r+b") as f:
        f.seek(len(data))
        f.write(b"\x17torn frame bytes")

    events = EventLog(make_config(tmp_path))
    assert events.index is not None
    assert [i.kind for i in events.index.incidents()] == ["repair"]
    events.close()
    repairs = [e.body for e in History(tmp_path).events(0) if isinstance(e.body, Repair)]
    assert len(repairs) == 1
    assert repairs[0].offset == len(data)
    assert repairs[0].bytes_cut == len(b"\x17torn frame bytes")
    assert repairs[0].quarantined is not None
    assert Path(repairs[0].quarantined).read_bytes() == b"\x17torn frame bytes"


def _eventually(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_append_many_stamps_a_poll_alike_and_is_all_or_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog(make_config(tmp_path), clock=clock)
    last = events.append_many([reading(i) for i in range(5)])
    assert last == 4
    events.writer._max_pending_bytes = 0  # the disk stalls: the next poll is refused whole
    with pytest.raises(LogFullError):
        events.append_many([reading(i) for i in range(5, 10)])
    events.writer._max_pending_bytes = 1 << 20
    events.close()
    stored = list(History(tmp_path).events(0))
    assert [e.seq for e in stored] == [0, 1, 2, 3, 4]
    assert len({(e.ts_ns, e.mono_ns) for e in stored}) == 1
    assert [e.body for e in stored] == [reading(i) for i in range(5)]
