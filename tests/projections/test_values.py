"""What `latest` and `rollup` store, against values worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from pilog.events import ClockStep, Event, Gap, Reading, Value
from pilog.projections.latest.projection import LatestProjection, LatestRow, read_latest
from pilog.projections.lmdb_store import ProjectionRunner, ProjectionStore
from pilog.projections.rollup.projection import (
    WINDOW_TAG,
    RollupProjection,
    WindowRow,
    list_series,
    read_windows,
    split_window_key,
)

SECOND = 1_000_000_000
HOUR0 = 1_795_000_000 // 3600 * 3600 * SECOND  # on the hour, so on the minute too


def at(seq: int, t_s: float, sensor: str, **values: Value) -> Event:
    return Event(seq, HOUR0 + int(t_s * SECOND), seq, b"", Reading(sensor, "test", dict(values)))


def run(
    store: ProjectionStore, projection: LatestProjection | RollupProjection, events: list[Event]
) -> None:
    runner = ProjectionRunner(projection, store, commit_interval_s=5.0)
    for i in range(0, len(events), 2):  # small batches: state crosses commits
        runner.handle(events[i : i + 2])
        runner.commit()


def test_latest_keeps_the_last_value_by_seq_of_every_type(tmp_path: Path) -> None:
    events = [
        at(0, 0, "air", temperature_c=20.5, ok=True, state="warming", count=3),
        Event(1, HOUR0, 1, b"", Gap("dropped", 0, 0)),
        at(2, 10, "air", temperature_c=21.0, ok=False),
        # The wall clock stepped back: seq order still decides which value is the latest.
        Event(3, HOUR0, 3, b"", ClockStep(-60 * SECOND, HOUR0 + 10 * SECOND, HOUR0 - 50 * SECOND)),
        at(4, -50, "air", temperature_c=19.0),
        at(5, 11, "soil", moisture_pct=40),
    ]
    with ProjectionStore(tmp_path / "projections") as store:
        run(store, LatestProjection("latest", store.db("latest")), events)
        with store.snapshot() as snap:
            rows = read_latest(snap, "latest")
            assert read_latest(snap, "latest", sensor="soil") == rows[-1:]
            assert snap.cursor("latest") == 6

    def row(sensor: str, field: str, value: Value, t_s: float, seq: int) -> LatestRow:
        return LatestRow(sensor, field, value, HOUR0 + int(t_s * SECOND), seq, "test")

    assert rows == [
        row("air", "count", 3, 0, 0),
        row("air", "ok", False, 10, 2),
        row("air", "state", "warming", 0, 0),
        row("air", "temperature_c", 19.0, -50, 4),
        row("soil", "moisture_pct", 40, 11, 5),
    ]
    assert type(rows[0].value) is int  # 3 stays an int, never 3.0
    assert type(rows[1].value) is bool


def test_rollup_aggregates_numbers_per_window(tmp_path: Path) -> None:
    events = [
        at(0, 5, "air", t=10, ok=True, label="a"),
        at(1, 30, "air", t=14.5),
        at(2, 59.999, "air", t=12),  # still the first minute
        at(3, 60, "air", t=-3),  # the second minute starts exactly here
        at(4, 61, "air", t=float("nan")),  # skipped: a NaN would poison min, max and mean
        at(5, 3601, "air", t=7),  # the next hour
        at(6, 62, "air", t=float("inf")),
    ]
    with ProjectionStore(tmp_path / "projections") as store:
        run(store, RollupProjection("rollup", store.db("rollup"), [60, 3600]), events)
        with store.snapshot() as snap:
            minutes = read_windows(snap, "rollup", "air", "t", 60)
            hours = read_windows(snap, "rollup", "air", "t", 3600)
            since = read_windows(snap, "rollup", "air", "t", 60, since_ns=HOUR0 + 90 * SECOND)
            series = list_series(snap, "rollup")

    def win(start_s: int, w: int, count: int, lo: float, hi: float, mean: float, last: float,
            last_t: float, last_seq: int) -> WindowRow:  # fmt: skip
        ts = HOUR0 + int(last_t * SECOND)
        return WindowRow(HOUR0 + start_s * SECOND, w, count, lo, hi, mean, last, ts, last_seq)

    assert minutes == [
        win(0, 60, 3, 10, 14.5, 36.5 / 3, 12, 59.999, 2),
        win(60, 60, 1, -3, -3, -3.0, -3, 60, 3),
        win(3600, 60, 1, 7, 7, 7.0, 7, 3601, 5),
    ]
    assert hours == [
        win(0, 3600, 4, -3, 14.5, 33.5 / 4, -3, 60, 3),
        win(3600, 3600, 1, 7, 7, 7.0, 7, 3601, 5),
    ]
    assert since == minutes[1:]  # the window holding `since` is included
    # bools and strings are not aggregated; each window length is its own series.
    assert series == [("air", "t", 60), ("air", "t", 3600)]


def test_rollup_keeps_the_newest_windows_of_each_window_length(tmp_path: Path) -> None:
    events = [at(i, 60 * i + 1, "air", t=i) for i in range(10)]
    events.append(at(10, 60 * 2 + 5, "air", t=99))  # a late reading for a pruned window
    events.append(at(11, 60 * 8 + 5, "air", t=100))  # a late reading for a kept window
    with ProjectionStore(tmp_path / "projections") as store:
        run(store, RollupProjection("rollup", store.db("rollup"), [60], keep_windows=3), events)
        with store.snapshot() as snap:
            rows = read_windows(snap, "rollup", "air", "t", 60)
    assert [(r.start_ns - HOUR0) // SECOND for r in rows] == [420, 480, 540]
    assert [r.count for r in rows] == [1, 2, 1]
    assert rows[1].last == 100


def test_retention_is_by_time_so_a_silent_series_ages_out_with_its_directory_entry(
    tmp_path: Path,
) -> None:
    events = [at(0, 1, "old", t=1), at(1, 2, "air", t=1)]
    events += [at(2 + i, 60 * i + 3, "air", t=i) for i in range(1, 5)]
    with ProjectionStore(tmp_path / "projections") as store:
        run(store, RollupProjection("rollup", store.db("rollup"), [60], keep_windows=3), events)
        with store.snapshot() as snap:
            assert read_windows(snap, "rollup", "old", "t", 60) == []
            assert list_series(snap, "rollup") == [("air", "t", 60)]
            rows = read_windows(snap, "rollup", "air", "t", 60)
    assert [(r.start_ns - HOUR0) // SECOND for r in rows] == [120, 180, 240]


def test_windows_of_many_series_are_read_back_per_series(tmp_path: Path) -> None:
    sensors = ["a", "b", "c"]
    events = [
        at(3 * m + i, 60 * m + i, sensor, t=10 * i + m)
        for m in range(4)
        for i, sensor in enumerate(sensors)
        if not (sensor == "b" and m == 2)  # b is silent in the third minute
    ]
    events = [msgspec.structs.replace(e, seq=n) for n, e in enumerate(events)]
    with ProjectionStore(tmp_path / "projections") as store:
        run(store, RollupProjection("rollup", store.db("rollup"), [60, 3600]), events)
        with store.snapshot() as snap:
            b = read_windows(snap, "rollup", "b", "t", 60)
            c_since = read_windows(snap, "rollup", "c", "t", 60, since_ns=HOUR0 + 150 * SECOND)
            hours = read_windows(snap, "rollup", "a", "t", 3600)
            series = list_series(snap, "rollup")
    assert [((r.start_ns - HOUR0) // SECOND, r.last) for r in b] == [(0, 10), (60, 11), (180, 13)]
    assert [r.last for r in c_since] == [22, 23]
    assert [(r.count, r.min, r.max) for r in hours] == [(4, 0, 3)]
    assert series == [(s, "t", w) for s in sensors for w in (60, 3600)]


def test_the_windows_still_filling_sit_side_by_side_in_key_order(tmp_path: Path) -> None:
    """What keeps a commit to a few lmdb pages on an old store: the keys a commit rewrites
    (every series' newest window of each length) form one run, not one key per series."""
    sensors = ["a", "b", "c"]
    events = [
        at(len(sensors) * m + i, 60 * m + i, sensor, t=m, rh=m)
        for m in range(30)
        for i, sensor in enumerate(sensors)
    ]
    with ProjectionStore(tmp_path / "projections") as store:
        run(store, RollupProjection("rollup", store.db("rollup"), [60, 3600]), events)
        with store.snapshot() as snap:
            keys = [k for k, _ in snap.items("rollup") if k.startswith(WINDOW_TAG)]
    assert keys == sorted(keys)
    for length in (60, 3600):
        of_length = [k for k in keys if split_window_key(k)[0] == length]
        newest = max(split_window_key(k)[1] for k in of_length)
        positions = [i for i, k in enumerate(keys) if split_window_key(k)[:2] == (length, newest)]
        assert len(positions) == len(sensors) * 2  # every series has its newest window there
        assert positions == list(range(positions[0], positions[0] + len(positions)))


@pytest.mark.parametrize("value", [True, "12", float("nan"), float("-inf")])
def test_rollup_skips_values_that_are_not_finite_numbers(tmp_path: Path, value: Value) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        run(store, RollupProjection("rollup", store.db("rollup"), [60]), [at(0, 1, "a", v=value)])
        with store.snapshot() as snap:
            assert list_series(snap, "rollup") == []
            assert snap.cursor("rollup") == 1


def test_rollup_sums_large_ints_exactly(tmp_path: Path) -> None:
    big = 2**60
    with ProjectionStore(tmp_path / "projections") as store:
        events = [at(0, 1, "disk", used_bytes=big), at(1, 2, "disk", used_bytes=big + 1)]
        run(store, RollupProjection("rollup", store.db("rollup"), [60]), events)
        with store.snapshot() as snap:
            (row,) = read_windows(snap, "rollup", "disk", "used_bytes", 60)
    assert (row.min, row.max, row.last) == (big, big + 1, big + 1)
    assert math.isclose(row.mean, big + 0.5)


def test_rollup_sum_beyond_msgpack_ints_goes_on_as_a_float(tmp_path: Path) -> None:
    huge = 2**63 - 1
    events = [at(i, i, "disk", used_bytes=huge) for i in range(3)]
    with ProjectionStore(tmp_path / "projections") as store:
        run(store, RollupProjection("rollup", store.db("rollup"), [60]), events)
        with store.snapshot() as snap:
            (row,) = read_windows(snap, "rollup", "disk", "used_bytes", 60)
    assert row.max == huge
    assert math.isclose(row.mean, huge)
