"""What `latest` and `rollup` store, against values worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pilog.events import ClockStep, Event, Gap, Reading, Value
from pilog.projections.latest import LatestProjection, LatestRow, read_latest
from pilog.projections.lmdb_store import ProjectionRunner, ProjectionStore
from pilog.projections.rollup import RollupProjection, WindowRow, list_series, read_windows

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


def test_rollup_keeps_the_newest_windows_of_each_series(tmp_path: Path) -> None:
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
