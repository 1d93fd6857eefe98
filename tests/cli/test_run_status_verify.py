"""`pilog run` stops cleanly on signals; `status` and `verify` report what is on disk."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from helpers import (
    DEVICE_ID,
    assert_one_sentence_error,
    pilog,
    run_pilog,
    status_json,
    tail_json,
    wait_for_seq,
    wait_until,
    write_config,
)

from pilog.config import load_config
from pilog.datadir import EventLog
from pilog.events import DriverStopped
from pilog.history import History
from pilog.index.store import IndexStore
from pilog.log.format import FRAME_HEADER_BYTES, decode_header, scan_frames
from pilog.log.naming import list_segments

SMALL_SEGMENTS = {"segment_bytes": "8KiB", "max_bytes": "64MiB"}


def frames_of(path: Path) -> tuple[list[tuple[int, int]], int]:
    """(start, end) offsets of the good frames of a segment file, and the end of the last."""
    data = path.read_bytes()
    header = decode_header(data, path.name)
    out: list[tuple[int, bytes]] = []
    scan_frames(data, header.size, header.base_seq, out)
    bounds: list[tuple[int, int]] = []
    offset = header.size
    for _seq, payload in out:
        bounds.append((offset, offset + FRAME_HEADER_BYTES + len(payload)))
        offset = bounds[-1][1]
    return bounds, offset


def make_log(tmp_path: Path, *, log: dict[str, object] | None = None, events: int = 200) -> Path:
    """Run pilog until the log holds `events` events, stop it, return the config."""
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        log=log or SMALL_SEGMENTS,
        sensors=[{"name": "air", "interval_ms": 1, "batch": 10}],
    )
    with run_pilog(config) as run:
        wait_for_seq(tmp_path / "data", events)
        assert run.stop() == 0, run.stderr.text()
    return config


# -- run: signals ---------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_exits_0_with_every_event_and_driver_stopped_on_disk(
    tmp_path: Path, sig: signal.Signals
) -> None:
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "pilog.toml",
        data,
        log={"fsync": "interval", "fsync_interval_ms": 1000, **SMALL_SEGMENTS},
        sensors=[{"name": "air", "interval_ms": 2}, {"name": "soil", "interval_ms": 3}],
    )
    with run_pilog(config) as run:
        wait_for_seq(data, 100)
        assert run.stop(sig) == 0, run.stderr.text()
    stopped = run.stderr.wait_for(lambda ln: "pilog stopped" in ln, "the stop log line")
    synced = int(re.search(r"synced up to seq (\d+)", stopped).group(1))  # type: ignore[union-attr]

    events = list(History(data).events(0))
    assert [e.seq for e in events] == list(range(len(events)))
    # A 1 s commit window: the last events are only in memory until stop commits them.
    assert events[-1].seq == synced
    last_two = {e.body.sensor for e in events[-2:] if isinstance(e.body, DriverStopped)}
    assert last_two == {"air", "soil"}


def test_stop_under_a_write_backlog_still_records_driver_stopped_and_counts_drops(
    tmp_path: Path,
) -> None:
    # As fast as possible into small segments: the committer (syncs at every rotation) falls
    # behind until the writer's in-memory bound refuses appends. The last words of the sensor
    # must still reach the log, and the refused readings must be counted in a Gap.
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "pilog.toml",
        data,
        log={"segment_bytes": "64KiB", "max_bytes": "1GiB"},
        sensors=[{"name": "fast", "interval_ms": 0, "batch": 50}],
    )
    with run_pilog(config) as run:
        wait_until(lambda: len(list_segments(data / "log")) >= 20 or None, "20 segments")
        assert run.stop() == 0, run.stderr.text()
    last = tail_json("-c", config, "--from", "-1")
    assert last[0]["type"] == "driver_stopped"
    assert last[0]["sensor"] == "fast"
    # Each Gap is logged once when appended; the index lists them (the log is too big to scan).
    warned = re.findall(r"sensor fast: (\d+) readings? dropped", run.stderr.text())
    state = status_json("-c", config)
    assert state["gaps"] == len(warned)
    counts = [i["detail"]["count"] for i in state["incidents"] if i["kind"] == "gap"]
    assert sorted(counts) == sorted(int(n) for n in warned[-10:])


# -- status ---------------------------------------------------------------------------------


def test_status_json_reports_segments_bytes_seqs_and_the_writer_pid(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "pilog.toml",
        data,
        # A short window: seq 500 shows up on disk long before 1 MiB of readings drops any.
        log={"segment_bytes": "8KiB", "max_bytes": "1MiB", "fsync_interval_ms": 100},
        sensors=[{"name": "air", "interval_ms": 1, "batch": 5}],
    )
    with run_pilog(config) as run:
        wait_for_seq(data, 500)
        running = status_json("-c", config)
        assert running["writer_pid"] == run.pid
        assert run.stop() == 0
    stopped = status_json("-c", config)

    files = list_segments(data / "log")
    assert stopped["writer_pid"] is None
    assert stopped["device_id"] == DEVICE_ID
    assert stopped["segments"] == len(files) >= 2
    assert stopped["bytes"] == sum(p.stat().st_size for _, p in files)
    assert stopped["max_bytes"] == 1 << 20
    assert stopped["first_seq"] == files[0][0] == 0
    assert stopped["last_seq"] == History(data).last_seq()
    assert stopped["durable_seq"] == stopped["last_seq"]  # a stopped writer synced all
    assert stopped["repairs"] == 0
    assert stopped["gaps"] == 0
    assert running["segments"] >= 1
    assert 0 <= running["first_seq"] <= running["last_seq"] <= stopped["last_seq"]


def test_every_segment_the_cap_drops_before_a_consumer_had_it_is_a_gap(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "pilog.toml",
        data,
        log={"segment_bytes": "8KiB", "max_bytes": "32KiB", "preallocate": False},
        sensors=[{"name": "air", "interval_ms": 1, "batch": 5}],
    )
    # A consumer cursor at 0 that never moves: every segment the cap deletes is a loss.
    events = EventLog(load_config(config))
    try:
        assert events.index is not None
        events.index.set_cursor("sink:test", 0)
    finally:
        events.close()
    with run_pilog(config) as run:
        wait_until(lambda: status_json("-c", config)["gaps"] >= 5 or None, "five gaps")
        # Stopping commits the last 100 ms of readings: several more rotations and drops.
        assert run.stop() == 0
    assert "Traceback" not in run.stderr.text()

    state = status_json("-c", config)
    index = IndexStore(data / "index.sqlite", readonly=True)
    try:
        recorded = [i for i in index.incidents(limit=1_000_000) if i.kind == "gap"]
    finally:
        index.close()
    assert state["gaps"] == len(recorded)
    lost: set[int] = set()
    for gap in recorded:
        detail = json.loads(gap.detail)
        lost.update(range(detail["first_seq"], detail["last_seq"] + 1))
    assert lost == set(range(state["first_seq"]))  # every lost seq is named, nothing else
    assert state["bytes"] <= state["max_bytes"] + 8 * 1024
    # The newest Gap is in the log itself, not only in the index.
    in_log = tail_json("-c", config, "--from", "0", "--type", "gap")
    assert in_log
    assert in_log[-1]["seq"] == max(g.seq for g in recorded)


# -- verify ---------------------------------------------------------------------------------


def test_verify_passes_a_good_log(tmp_path: Path) -> None:
    config = make_log(tmp_path)
    result = pilog("verify", "-c", config)
    assert result.returncode == 0, result.stderr
    last = History(tmp_path / "data").last_seq()
    assert f"seq 0..{last}" in result.stdout
    assert "damage" not in result.stderr


def test_verify_names_segment_and_offset_of_a_flipped_byte_in_a_sealed_segment(
    tmp_path: Path,
) -> None:
    config = make_log(tmp_path, events=500)
    segments = list_segments(tmp_path / "data" / "log")
    assert len(segments) >= 3
    _base, victim = segments[len(segments) // 2]  # sealed: a newer segment follows it
    bounds, _end = frames_of(victim)
    start, end = bounds[len(bounds) // 2]
    pos = (start + end) // 2
    data = bytearray(victim.read_bytes())
    data[pos] ^= 0x40
    victim.write_bytes(data)

    result = pilog("verify", "-c", config)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert f"{victim.name} at offset {start}" in result.stderr, result.stderr


def test_tail_refuses_to_read_past_damage_in_a_sealed_segment(tmp_path: Path) -> None:
    config = make_log(tmp_path, events=500)
    base, victim = list_segments(tmp_path / "data" / "log")[1]
    bounds, _end = frames_of(victim)
    start, _stop = bounds[0]
    data = bytearray(victim.read_bytes())
    data[start + 20] ^= 0xFF
    victim.write_bytes(data)

    result = pilog("tail", "-c", config, "--from", "0", "--json")
    line = assert_one_sentence_error(result)
    assert f"{victim.name} at offset {start}" in line
    printed = [int(n) for n in re.findall(r'"seq":(\d+)', result.stdout)]
    assert printed == list(range(base))  # everything before the damage, nothing after it


# -- torn tail ------------------------------------------------------------------------------


@pytest.mark.parametrize("preallocate", [True, False], ids=["preallocated", "grown"])
def test_torn_tail_is_cut_quarantined_and_recorded_by_the_next_run(
    tmp_path: Path, preallocate: bool
) -> None:
    data = tmp_path / "data"
    config = make_log(tmp_path, log={**SMALL_SEGMENTS, "preallocate": preallocate})
    before = tail_json("-c", config, "--from", "0")
    _base, newest = list_segments(data / "log")[-1]
    _bounds, data_end = frames_of(newest)
    garbage = bytes(range(1, 101))  # a half-written frame: not zeros, no valid checksum
    with newest.open("r+b") as f:
        f.seek(data_end)
        f.write(garbage)

    noted = pilog("verify", "-c", config)
    assert noted.returncode == 0, noted.stderr  # a torn tail is routine, not damage
    assert f"{newest.name}: torn tail at offset {data_end}" in noted.stderr

    with run_pilog(config) as run:
        warning = run.stderr.wait_for(lambda ln: "repaired" in ln, "the repair log line")
        wait_for_seq(data, before[-1]["seq"] + 5)
        assert run.stop() == 0
    assert f"repaired {newest.name}: cut {len(garbage)} bytes at offset {data_end}" in warning

    quarantined = list((data / "quarantine").iterdir())
    assert len(quarantined) == 1
    assert quarantined[0].read_bytes() == garbage
    state = status_json("-c", config)
    assert state["repairs"] == 1
    assert state["quarantined_files"] == [quarantined[0].name]
    repairs = tail_json("-c", config, "--from", "0", "--type", "repair")
    assert len(repairs) == 1
    assert repairs[0]["segment"] == newest.name
    assert repairs[0]["offset"] == data_end
    assert repairs[0]["bytes_cut"] == len(garbage)
    assert repairs[0]["seq"] == before[-1]["seq"] + 1  # the first event the next run appended

    after = tail_json("-c", config, "--from", "0")
    assert after[: len(before)] == before
    assert [e["seq"] for e in after] == list(range(len(after)))
    assert pilog("verify", "-c", config).returncode == 0
