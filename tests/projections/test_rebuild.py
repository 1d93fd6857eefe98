"""Rebuilding from the log gives byte-identical projections, however the log was fed in.

The same events, split into any batches, committed at any boundaries, with a crash (events
applied, never committed) and a restart from the stored cursor, leave exactly the bytes that
one pass over the whole log leaves (invariants 1 and 4).
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from helpers import dump_lmdb, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilog.config import Config, parse_config
from pilog.datadir import EventLog
from pilog.errors import LockedError
from pilog.events import DriverStarted, Event, Gap, Note, Reading
from pilog.history import History
from pilog.projections import ProjectionError, open_runners, rebuild
from pilog.projections.latest.projection import LatestProjection
from pilog.projections.lmdb_store import ProjectionRunner, ProjectionStore, projections_path
from pilog.projections.rollup.projection import (
    SERIES_TAG,
    WINDOW_TAG,
    RollupProjection,
    split_window_key,
)
from pilog.testing.clock import FakeClock

SECOND = 1_000_000_000
Dump = dict[bytes, list[tuple[bytes, bytes]]]


def make_config(data_dir: Path) -> Config:
    text = f"""
    device_id = "rebuild-box"
    data_dir = "{data_dir}"
    [log]
    segment_bytes = "16KiB"
    max_bytes = "64MiB"
    preallocate = false
    [[projection]]
    type = "latest"
    [[projection]]
    type = "rollup"
    windows = ["10s", "1m"]
    [[projection]]
    type = "rollup"
    name = "hourly"
    windows = ["1h"]
    """
    return parse_config(tomllib.loads(text), "test.toml", {})


def write_log(config: Config, n: int, seed: int = 7) -> None:
    """Readings of three sensors with every value type, and a few other events."""
    rng = random.Random(seed)
    clock = FakeClock()
    log = EventLog(config, clock=clock)
    for i in range(n):
        clock.advance(rng.randrange(1, 9 * SECOND))
        if i % 97 == 50:
            clock.step_wall(-120 * SECOND)  # an NTP step back: late readings for old windows
        if i % 41 == 0:
            log.append(rng.choice([Note("hi"), DriverStarted("air", "bme280"), Gap("x", count=2)]))
            continue
        log.append(reading(rng, i))
    log.close()


def reading(rng: random.Random, i: int) -> Reading:
    sensor = rng.choice(["air", "soil", "host"])
    values: dict[str, float | int | str | bool] = {
        "temperature_c": round(rng.gauss(20, 5), 3),
        "count": rng.randrange(-5, 1000),
        "ok": rng.random() < 0.8,
    }
    if i % 13 == 0:
        values["state"] = rng.choice(["idle", "busy", "fault"])
    if i % 29 == 0:
        values["temperature_c"] = float("nan")
    if i % 31 == 0:
        values["bytes"] = 2**62 + i
    return Reading(sensor, "test", values)


def projections(store: ProjectionStore) -> list[ProjectionRunner]:
    """Hand-built runners: a rollup keeping few windows, so retention is exercised too."""
    built = [
        LatestProjection("latest", store.db("latest")),
        RollupProjection("rollup", store.db("rollup"), [10, 60], keep_windows=4),
    ]
    return [ProjectionRunner(p, store, commit_interval_s=5.0) for p in built]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, list[Event], Dump]:
    """A log of 600 events, and the projections of one pass over it."""
    data_dir = tmp_path_factory.mktemp("rebuild")
    config = make_config(data_dir)
    write_log(config, 600)
    events = list(History(data_dir).events(0))
    assert [e.seq for e in events] == list(range(len(events)))
    with ProjectionStore(data_dir / "one-pass") as store:
        runners = projections(store)
        for r in runners:
            r.handle(events)
            r.commit()
    return config, events, dump_lmdb(data_dir / "one-pass")


def feed(
    store: ProjectionStore, events: list[Event], sizes: list[int], commits: list[bool], crash: int
) -> None:
    """Feed `events` in batches of `sizes`, committing after batch i when commits[i]; after
    batch `crash`, drop the runners uncommitted and restart from the stored cursor."""
    runners = projections(store)
    pos = 0
    for i in itertools.count():
        if pos >= len(events):
            break
        batch = events[pos : pos + sizes[i % len(sizes)]]
        for r in runners:
            r.handle(batch)
        pos += len(batch)
        if i == crash:
            runners = projections(store)
            cursors = {r.next_seq for r in runners}
            assert len(cursors) == 1  # all committed at the same points
            pos = cursors.pop() or 0
        elif commits[i % len(commits)]:
            for r in runners:
                r.commit()
    for r in runners:
        r.commit()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(1, 120), min_size=1, max_size=12),
    commits=st.lists(st.booleans(), min_size=1, max_size=12),
    crash=st.integers(0, 20),
)
def test_any_batching_with_commits_and_a_crash_is_byte_identical_to_one_pass(
    logged: tuple[Config, list[Event], Dump], sizes: list[int], commits: list[bool], crash: int
) -> None:
    _, events, expected = logged
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "projections"
        with ProjectionStore(path) as store:
            feed(store, events, sizes, commits, crash)
        assert dump_lmdb(path) == expected


def test_expected_state_is_not_trivially_empty(logged: tuple[Config, list[Event], Dump]) -> None:
    _, events, expected = logged
    assert set(expected) == {b"cursors", b"meta", b"state:latest", b"state:rollup"}
    assert len(expected[b"state:latest"]) == 3 * 5  # 3 sensors x 5 fields
    # sensors x numeric fields x window lengths x at most 4 windows kept, less where sparse
    rollup = expected[b"state:rollup"]
    windows = [k for k, _ in rollup if k.startswith(WINDOW_TAG)]
    directory = [k for k, _ in rollup if k.startswith(SERIES_TAG)]
    assert 30 < len(windows) <= 3 * 3 * 2 * 4
    # The directory lists exactly the series (and lengths) that still have windows.
    with_windows = {(split_window_key(k)[2], split_window_key(k)[0]) for k in windows}
    listed = {(k[1:-4], int.from_bytes(k[-4:], "big")) for k in directory}
    assert listed == with_windows
    assert len(windows) + len(directory) == len(rollup)
    assert expected[b"cursors"] == [
        (b"latest", len(events).to_bytes(8, "big")),
        (b"rollup", len(events).to_bytes(8, "big")),
    ]


def test_rebuild_matches_the_state_pilog_kept_incrementally(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    write_log(config, 400, seed=3)
    events = list(History(config.data_dir).events(0))
    with ProjectionStore(projections_path(config.data_dir)) as store:
        runners = open_runners(config, store)
        for start in range(0, len(events), 37):
            for r in runners:
                r.handle(events[start : start + 37])
                r.maybe_commit(start / 10)  # a commit every 5 "seconds"
        for r in runners:
            r.commit()
    incremental = dump_lmdb(projections_path(config.data_dir))

    assert rebuild(config.data_dir, config) == {"latest": 400, "rollup": 400, "hourly": 400}
    assert dump_lmdb(projections_path(config.data_dir)) == incremental
    assert rebuild(config.data_dir, config, ["hourly"]) == {"hourly": 400}
    assert dump_lmdb(projections_path(config.data_dir)) == incremental


def test_rebuild_of_an_empty_log_leaves_empty_projections(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert rebuild(tmp_path, config, ["latest"]) == {"latest": 0}
    with ProjectionStore(projections_path(tmp_path), readonly=True) as store:
        assert store.cursor("latest") is None


def test_rebuild_of_an_unknown_projection_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ProjectionError, match=r"unknown projection daily \(known: hourly, "):
        rebuild(tmp_path, make_config(tmp_path), ["daily"])


def test_rebuild_refuses_while_pilog_runs_on_the_data_dir(tmp_path: Path) -> None:
    # A process whose command line names pilog, recorded in LOCK as `pilog run` records itself.
    argv = [sys.executable, "-c", "import sys; sys.stdin.read()", "pilog", "run"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE) as running:
        assert running.stdin is not None
        (tmp_path / "LOCK").write_text(f"{running.pid}\n")
        cmdline = Path(f"/proc/{running.pid}/cmdline")
        wait_until(lambda: b"pilog" in cmdline.read_bytes(), "the child's exec")
        with pytest.raises(LockedError, match=rf"in use by pid {running.pid}"):
            rebuild(tmp_path, make_config(tmp_path))
        running.stdin.close()
        assert running.wait(timeout=60) == 0
    assert not projections_path(tmp_path).exists()
