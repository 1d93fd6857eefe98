"""The SQLite index: catalogue on seal, rebuild from the log, cursors, incidents."""

from __future__ import annotations

import itertools
import sqlite3
import tomllib
from pathlib import Path

import pytest

from pilog.config import Config, parse_config
from pilog.datadir import EventLog
from pilog.events import Gap, Reading
from pilog.index.store import IndexStore
from pilog.testing.clock import FakeClock

SECOND = 1_000_000_000


def make_config(data_dir: Path, segment: str = "8KiB") -> Config:
    text = f"""
    device_id = "test-box"
    data_dir = "{data_dir}"
    [log]
    segment_bytes = "{segment}"
    max_bytes = "64MiB"
    preallocate = false
    """
    return parse_config(tomllib.loads(text), "test.toml", {})


def fill(events: EventLog, clock: FakeClock, n: int) -> list[int]:
    seqs = []
    for i in range(n):
        clock.advance(SECOND)
        seqs.append(events.append(Reading("s", "synthetic", {"i": i, "pad": "x" * 40})))
    events.writer.sync()
    return seqs


def test_sealed_segments_are_catalogued_with_seq_and_time_bounds(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog(make_config(tmp_path), clock=clock)
    start = clock.wall_ns()
    fill(events, clock, 400)
    events.close()
    index = IndexStore(tmp_path / "index.sqlite", readonly=True)
    rows = index.segments()
    assert len(rows) >= 3
    assert all(r.sealed for r in rows)
    assert rows[0].base_seq == 0
    for a, b in itertools.pairwise(rows):
        assert b.base_seq == a.last_seq + 1
        assert a.first_ts_ns is not None
        assert a.last_ts_ns is not None
        assert a.first_ts_ns <= a.last_ts_ns < b.first_ts_ns  # type: ignore[operator]
    assert rows[0].first_ts_ns == start + SECOND
    on_disk = {p.name: p.stat().st_size for p in (tmp_path / "log").iterdir()}
    for r in rows:
        assert on_disk[r.name] == r.size


def test_appending_within_a_segment_writes_nothing_to_the_index(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog(make_config(tmp_path, segment="1MiB"), clock=clock)
    assert events.index is not None
    before = events.index._db.total_changes
    fill(events, clock, 200)
    assert events.index._db.total_changes == before
    events.close()


def test_missing_index_is_rebuilt_with_the_same_catalogue_and_incidents(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog(make_config(tmp_path), clock=clock)
    fill(events, clock, 300)
    gap_seq = events.append_incident(Gap("test gap", count=3, sensor="s"))
    fill(events, clock, 100)
    events.close()
    original = IndexStore(tmp_path / "index.sqlite", readonly=True)
    expected = original.segments()
    expected_incidents = original.incidents()
    original.close()
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)

    events = EventLog(make_config(tmp_path), clock=clock)
    assert events.index is not None
    sealed = [s for s in events.index.segments() if s.sealed]
    assert sealed == expected
    assert [i.seq for i in events.index.incidents()] == [gap_seq]
    assert events.index.incidents() == expected_incidents
    events.close()


def test_damaged_index_is_kept_aside_and_rebuilt(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog(make_config(tmp_path), clock=clock)
    fill(events, clock, 300)
    events.close()
    (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)

    events = EventLog(make_config(tmp_path), clock=clock)
    assert events.index is not None
    assert len([s for s in events.index.segments() if s.sealed]) >= 2
    assert events.index.cursors() == {}
    assert list(tmp_path.glob("index.sqlite.broken-*"))
    events.close()


def test_index_of_an_older_schema_is_rebuilt_keeping_this_logs_cursors(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog(make_config(tmp_path), clock=clock)
    assert events.index is not None
    fill(events, clock, 300)
    events.index.set_cursor("sink:upstream", 123)
    events.close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    with db:
        db.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    db.close()

    events = EventLog(make_config(tmp_path), clock=clock)
    assert events.index is not None
    assert events.index.cursors() == {"sink:upstream": 123}
    assert len(events.index.segments()) >= 2
    events.close()


def test_index_of_4k_pages_and_a_rowid_cursors_table_is_upgraded_keeping_cursors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    events = EventLog(make_config(tmp_path), clock=clock)
    fill(events, clock, 300)
    epoch = events.epoch_hex
    events.close()
    # The file as schema version 2 wrote it: SQLite's default pages, cursors with a rowid.
    path = tmp_path / "index.sqlite"
    for side in (path, path.with_name("index.sqlite-wal"), path.with_name("index.sqlite-shm")):
        side.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    with db:
        db.execute("PRAGMA page_size=4096")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE cursors (name TEXT PRIMARY KEY, next_seq INTEGER NOT NULL, "
            "updated_ns INTEGER NOT NULL)"
        )
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)", [("schema_version", "2"), ("epoch", epoch)]
        )
        db.execute("INSERT INTO cursors VALUES ('sink:upstream', 123, 0)")
    db.close()

    with caplog.at_level("WARNING", "pilog.index"):
        events = EventLog(make_config(tmp_path), clock=clock)
    assert events.index is not None
    assert events.index.cursors() == {"sink:upstream": 123}
    assert len(events.index.segments()) >= 2
    events.close()
    assert "older layout (schema version 2, now 3)" in caplog.text
    assert not list(tmp_path.glob("index.sqlite.broken-*"))  # nothing in it was lost
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA page_size").fetchone()[0] == 1024
    db.close()


def test_a_cursor_move_appends_one_1k_page_to_the_wal(tmp_path: Path) -> None:
    """The SD-wear cost of a sink's acknowledged batch: one page of the WAL, never fsynced."""
    clock = FakeClock()
    events = EventLog(make_config(tmp_path), clock=clock)
    assert events.index is not None
    fill(events, clock, 300)
    for name in ("sink:a", "projection:latest", "projection:rollup"):
        events.index.set_cursor(name, 1)
    wal = tmp_path / "index.sqlite-wal"
    before = wal.stat().st_size
    moves = 50
    for i in range(moves):
        events.index.set_cursor("sink:a", 2 + i)
    per_move = (wal.stat().st_size - before) / moves
    events.close()
    assert per_move == 1024 + 24  # a page and its WAL frame header


def test_cursors_of_another_log_are_not_carried_over(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog(make_config(tmp_path), clock=clock)
    assert events.index is not None
    fill(events, clock, 300)
    events.index.set_cursor("sink:upstream", 123)
    events.close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    with db:
        db.execute("UPDATE meta SET value = 'feedface' WHERE key = 'epoch'")
    db.close()

    events = EventLog(make_config(tmp_path), clock=clock)
    assert events.index is not None
    assert events.index.cursors() == {}  # seqs of another epoch mean nothing in this log
    assert len(events.index.segments()) >= 2
    events.close()


def test_catalogue_missing_a_sealed_segment_is_reconciled_on_open(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog(make_config(tmp_path), clock=clock)
    fill(events, clock, 300)
    gap_seq = events.append_incident(Gap("late", count=1))
    fill(events, clock, 300)
    events.close()
    expected = IndexStore(tmp_path / "index.sqlite", readonly=True).segments()
    victim = next(r for r in expected if r.base_seq <= gap_seq <= r.last_seq)
    db = sqlite3.connect(tmp_path / "index.sqlite")
    with db:  # as if the process died between sealing a segment and recording it
        db.execute("DELETE FROM segments WHERE base_seq = ?", (victim.base_seq,))
        db.execute("DELETE FROM incidents")
        db.execute("INSERT INTO segments VALUES (999999, 1000000, 1, 2, 10, 1)")
    db.close()

    events = EventLog(make_config(tmp_path), clock=clock)
    assert events.index is not None
    assert [s for s in events.index.segments() if s.sealed] == expected
    assert [i.seq for i in events.index.incidents()] == [gap_seq]
    events.close()


def test_cursor_floor_is_the_slowest_consumer(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.sqlite")
    store._create("00" * 16)
    assert store.cursor_floor() is None
    store.set_cursor("sink:a", 50)
    store.set_cursor("projection:latest", 20)
    assert store.cursor_floor() == 20
    store.set_cursor("projection:latest", 70)
    assert store.cursor_floor() == 50
    store.close()


def test_time_lookup_finds_first_segment_reaching_a_time(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog(make_config(tmp_path), clock=clock)
    start = clock.wall_ns()
    fill(events, clock, 400)
    events.close()
    index = IndexStore(tmp_path / "index.sqlite", readonly=True)
    rows = index.segments()
    target = rows[1].first_ts_ns
    assert target is not None
    assert index.first_segment_reaching(target) == rows[1].base_seq
    assert index.first_segment_reaching(start) == 0
    assert index.first_segment_reaching(target + 10**15) is None


def test_readonly_index_refuses_writes(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.sqlite")
    store._create("00" * 16)
    store.close()
    ro = IndexStore(tmp_path / "index.sqlite", readonly=True)
    with pytest.raises(sqlite3.OperationalError):
        ro.set_cursor("x", 1)
