"""`pilog tail`: NDJSON of the log from another process, from a seq, a count, a time or an age,
filtered by sensor and type, and following a running `pilog run`."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DEVICE_ID,
    PILOG,
    Running,
    clean_env,
    last_seq,
    pilog,
    run_pilog,
    status_json,
    tail_json,
    wait_for_seq,
    write_config,
)

from pilog.cli.tail import parse_from
from pilog.config import load_config
from pilog.datadir import EventLog
from pilog.events import Note, Reading, rfc3339
from pilog.history import History
from pilog.testing.clock import FakeClock

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
MINUTE_NS = 60 * 10**9


def ns_of(ts: str) -> int:
    """Exact ns of an RFC 3339 time with up to microseconds."""
    t = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


@pytest.fixture(scope="module")
def stopped_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A stopped log of two sensors over several segments, and its events as tail prints them."""
    tmp = tmp_path_factory.mktemp("tail")
    config = write_config(
        tmp / "pilog.toml",
        tmp / "data",
        log={"segment_bytes": "8KiB", "max_bytes": "64MiB"},
        sensors=[{"name": "air", "interval_ms": 1}, {"name": "soil", "interval_ms": 2}],
    )
    with run_pilog(config) as run:
        wait_for_seq(tmp / "data", 600)
        assert run.stop() == 0
    return config, tail_json("-c", config, "--from", "0")


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


# -- output ---------------------------------------------------------------------------------


def test_json_lines_carry_id_seq_utc_time_type_and_body_fields(
    stopped_log: tuple[Path, list[dict[str, Any]]],
) -> None:
    config, events = stopped_log
    epoch = status_json("-c", config)["epoch"]
    assert seqs(events) == list(range(len(events)))
    history = {e.seq: e for e in History(load_config(config).data_dir).events(0)}
    for event in events:
        assert event["id"] == f"{DEVICE_ID}:{epoch}:{event['seq']}"
        assert RFC3339_UTC.match(event["timestamp"]), event["timestamp"]
        stored = history[event["seq"]]
        assert ns_of(event["timestamp"]) == stored.ts_ns // 1000 * 1000
        assert event["type"] == stored.type
        if isinstance(stored.body, Reading):
            assert event["sensor"] == stored.body.sensor
            assert event["sensor_type"] == "synthetic"
            assert event["payload"] == stored.body.values
            assert set(event["payload"]) == {"temperature_c", "humidity_pct", "pressure_hpa"}
    types = {e["type"] for e in events}
    assert {"driver_started", "reading", "driver_stopped"} <= types


def test_piped_output_is_ndjson_without_asking(
    stopped_log: tuple[Path, list[dict[str, Any]]],
) -> None:
    config, events = stopped_log
    result = pilog("tail", "-c", config, "--from", "-3")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == events[-3:]


def test_terminal_output_is_human_lines(stopped_log: tuple[Path, list[dict[str, Any]]]) -> None:
    config, events = stopped_log
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*PILOG, "tail", "-c", str(config), "--from", "-3"],
        stdout=secondary,
        stderr=subprocess.PIPE,
        env={**clean_env(), "COLUMNS": "200"},
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert proc.wait(60) == 0
    assert proc.stderr is not None
    proc.stderr.close()
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == 3
    for line, event in zip(lines, events[-3:], strict=True):
        assert not line.startswith("{")
        assert event["timestamp"] in line
        assert f"#{event['seq']}" in line
        assert event["type"] in line


# -- --from ---------------------------------------------------------------------------------


def test_from_seq_starts_at_that_seq(stopped_log: tuple[Path, list[dict[str, Any]]]) -> None:
    config, events = stopped_log
    for start in (0, 1, 57, len(events) - 1):
        assert tail_json("-c", config, "--from", start) == events[start:]
    assert tail_json("-c", config, "--from", len(events)) == []


def test_from_minus_n_prints_the_last_n(stopped_log: tuple[Path, list[dict[str, Any]]]) -> None:
    config, events = stopped_log
    assert tail_json("-c", config, "--from", "-1") == events[-1:]
    assert tail_json("-c", config, "--from", "-25") == events[-25:]
    assert tail_json("-c", config, "--from", f"-{len(events) + 100}") == events
    assert len(tail_json("-c", config)) == 10  # the default


def test_from_time_starts_at_the_first_event_at_or_after_it(
    stopped_log: tuple[Path, list[dict[str, Any]]],
) -> None:
    config, events = stopped_log
    target = events[len(events) // 2]
    expected = [e for e in events if e["ts_ns"] >= ns_of(target["timestamp"])]
    assert tail_json("-c", config, "--from", target["timestamp"]) == expected
    # The same instant written with an offset, and a time after the last event.
    t = dt.datetime.fromisoformat(target["timestamp"].replace("Z", "+00:00"))
    in_berlin = t.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    assert tail_json("-c", config, "--from", in_berlin) == expected
    later = rfc3339(events[-1]["ts_ns"] + 1000)
    assert tail_json("-c", config, "--from", later) == []


@pytest.fixture(scope="module")
def dated_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log whose events are 40, 30, ..., 0 minutes old (plus a few ns), over many segments."""
    tmp = tmp_path_factory.mktemp("dated")
    config = write_config(
        tmp / "pilog.toml",
        tmp / "data",
        log={"segment_bytes": "4KiB", "max_bytes": "1MiB", "preallocate": False},
    )
    # Each minute starts 1 ns after a microsecond boundary: the printed time of its first
    # event is 1 ns before it.
    now = time.time_ns() // 1000 * 1000
    clock = FakeClock(wall_ns=now - 40 * MINUTE_NS + 1)
    events = EventLog(load_config(config), clock=clock)
    try:
        for minute in range(41):
            for i in range(20):
                events.append(Note(f"minute {minute} note {i}"))
                clock.advance(1 + i * 7)  # ns apart: microsecond rounding matters
            clock.advance(MINUTE_NS - sum(1 + i * 7 for i in range(20)))
    finally:
        events.close()
    return config


def test_from_age_starts_that_long_ago(dated_log: Path) -> None:
    events = tail_json("-c", dated_log, "--from", "0")
    assert len(events) == 41 * 20
    recent = tail_json("-c", dated_log, "--from", "10m")
    # Events from 9.99.. minutes ago on: minutes 31..40 (minute 30 is a little over 10m old).
    assert [e["text"] for e in recent] == [e["text"] for e in events[31 * 20 :]]
    assert tail_json("-c", dated_log, "--from", "2h") == events
    assert len(tail_json("-c", dated_log, "--from", "90s")) == 2 * 20


def test_from_time_is_exact_to_the_microsecond(dated_log: Path) -> None:
    # Every event's own printed time must select it (and nothing earlier): a float
    # conversion of the time is off by up to ~120 ns and skips events stamped just after it.
    history = History(load_config(dated_log).data_dir)
    events = list(history.events(0))
    now = time.time_ns()
    for i, event in enumerate(events):
        text = rfc3339(event.ts_ns)
        floor = event.ts_ns // 1000 * 1000
        first = next(j for j, e in enumerate(events) if e.ts_ns >= floor)
        assert parse_from(text, history, now) == events[first].seq, (i, text)
        assert first <= i


# -- filters --------------------------------------------------------------------------------


def test_sensor_filter_keeps_only_that_sensor(
    stopped_log: tuple[Path, list[dict[str, Any]]],
) -> None:
    config, events = stopped_log
    air = tail_json("-c", config, "--from", "0", "--sensor", "air")
    assert air == [e for e in events if e.get("sensor") == "air"]
    assert {e["type"] for e in air} >= {"driver_started", "reading", "driver_stopped"}
    both = tail_json("-c", config, "--from", "0", "--sensor", "air", "--sensor", "soil")
    assert both == [e for e in events if e.get("sensor") in ("air", "soil")]
    assert tail_json("-c", config, "--from", "0", "--sensor", "nope") == []


def test_type_filter_keeps_only_those_types(
    stopped_log: tuple[Path, list[dict[str, Any]]],
) -> None:
    config, events = stopped_log
    readings = tail_json("-c", config, "--from", "0", "--type", "reading")
    assert readings == [e for e in events if e["type"] == "reading"]
    lifecycle = tail_json(
        "-c", config, "--from", "0", "--type", "driver_started", "--type", "driver_stopped"
    )
    assert lifecycle == [e for e in events if e["type"].startswith("driver_")]
    assert len(lifecycle) == 4
    soil_readings = tail_json("-c", config, "--from", "0", "--type", "reading", "--sensor", "soil")
    assert soil_readings == [e for e in readings if e["sensor"] == "soil"]


# -- follow ---------------------------------------------------------------------------------


def test_follow_sees_events_as_run_appends_them_across_segments(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "pilog.toml",
        data,
        log={"segment_bytes": "8KiB", "max_bytes": "64MiB"},
        sensors=[{"name": "air", "interval_ms": 5}],
    )
    with (
        run_pilog(config) as run,
        Running("tail", "-f", "--json", "-c", config, "--from", "0") as tail,
    ):
        started_at = wait_for_seq(data, 5)
        # Well past the events on disk when tail started, and past several rotations.
        target = started_at + 300
        tail.stdout.wait_for(lambda ln: json.loads(ln)["seq"] >= target, f"seq {target}")
        assert tail.alive()
        assert run.stop() == 0
        final = last_seq(data)
        tail.stdout.wait_for(lambda ln: json.loads(ln)["seq"] == final, "the last event")
        assert tail.stop(signal.SIGINT) == 0
    followed = [json.loads(line) for line in tail.stdout.lines]
    assert followed == tail_json("-c", config, "--from", "0")
    assert followed[-1]["type"] == "driver_stopped"
    assert "Traceback" not in tail.stderr.text()


def test_follow_started_before_the_log_exists_waits_for_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "pilog.toml", data, sensors=[{"name": "air", "interval_ms": 5}]
    )
    with Running("tail", "-f", "--json", "-c", config, "--from", "0") as tail:
        with run_pilog(config) as run:
            first = json.loads(tail.stdout.wait_for(lambda ln: True, "the first event"))
            tail.stdout.wait_for(lambda ln: json.loads(ln)["seq"] >= 20, "seq 20")
            assert run.stop() == 0
        assert tail.stop(signal.SIGINT) == 0
    epoch = status_json("-c", config)["epoch"]
    assert first["seq"] == 0
    assert first["id"] == f"{DEVICE_ID}:{epoch}:0"
    followed = [json.loads(line) for line in tail.stdout.lines]
    assert all(e["id"] == f"{DEVICE_ID}:{epoch}:{e['seq']}" for e in followed)
    assert seqs(followed) == list(range(len(followed)))


def test_follow_with_a_filter_prints_only_matching_new_events(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "pilog.toml",
        data,
        sensors=[{"name": "air", "interval_ms": 5}, {"name": "soil", "interval_ms": 5}],
    )
    with run_pilog(config) as run:
        wait_for_seq(data, 10)
        with Running("tail", "-f", "-c", config, "--from", "-1", "--sensor", "soil") as tail:
            tail.stdout.wait_for(lambda ln: json.loads(ln)["type"] == "reading", "a reading")
            assert run.stop() == 0
            tail.stdout.wait_for(lambda ln: json.loads(ln)["type"] == "driver_stopped", "the stop")
            assert tail.stop(signal.SIGINT) == 0
    followed = [json.loads(line) for line in tail.stdout.lines]
    assert {e["sensor"] for e in followed} == {"soil"}
    assert seqs(followed) == sorted(set(seqs(followed)))
