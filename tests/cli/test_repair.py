"""`pilog repair`: a damaged sealed segment is rebuilt and consumers read through it."""

from __future__ import annotations

from pathlib import Path

from helpers import (
    assert_one_sentence_error,
    http_sink_toml,
    pilog,
    run_pilog,
    status_json,
    tail_json,
    wait_until,
    write_config,
)

from pilog.events import Reading, event_id
from pilog.history import History
from pilog.log.format import FRAME_HEADER_BYTES, decode_header, scan_frames
from pilog.testing.receiver import Receiver

LOG = {"segment_bytes": "4KiB", "max_bytes": "1MiB", "fsync_interval_ms": 10}


def fill_log(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    config = write_config(tmp_path / "plain.toml", data, log=LOG)
    with run_pilog(config) as p:
        p.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")
        wait_until(lambda: len(list((data / "log").glob("*.seg"))) >= 4, "four segments")
        assert p.stop() == 0, p.stderr.text()
    return data, config


def damage_frame(segment: Path, index: int) -> int:
    """Flip a payload byte of the segment's `index`-th frame; return that frame's seq."""
    raw = bytearray(segment.read_bytes())
    header = decode_header(raw, segment.name)
    frames: list[tuple[int, bytes]] = []
    scan_frames(bytes(raw), header.size, header.base_seq, frames)
    offset = header.size + sum(FRAME_HEADER_BYTES + len(p) for _, p in frames[:index])
    raw[offset + FRAME_HEADER_BYTES + 2] ^= 0xFF
    segment.write_bytes(bytes(raw))
    return frames[index][0]


def readings(data: Path) -> dict[int, str]:
    history = History(data)
    header = history.header()
    assert header is not None
    return {
        e.seq: event_id(header.device_id, header.epoch_hex, e.seq)
        for e in history.events()
        if isinstance(e.body, Reading)
    }


def test_repair_keeps_every_intact_record_and_turns_the_lost_one_into_a_gap(
    tmp_path: Path,
) -> None:
    data, config = fill_log(tmp_path)
    segments = sorted((data / "log").glob("*.seg"))
    victim = segments[1]
    lost_seq = damage_frame(victim, 3)
    damaged = victim.read_bytes()
    assert pilog("verify", "-c", config).returncode == 1

    # Refused while pilog runs: the running writer owns the data dir.
    with run_pilog(config) as p:
        p.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")
        refused = pilog("repair", "-c", config)
        assert refused.returncode == 2, refused
        assert str(p.pid) in assert_one_sentence_error(refused)
        assert p.stop() == 0, p.stderr.text()
    assert victim.read_bytes() == damaged

    dry = pilog("repair", "--dry-run", "-c", config)
    assert dry.returncode == 0, dry.stderr
    assert f"would repair {victim.name}" in dry.stdout, dry.stdout
    assert f"lost seq {lost_seq}" in dry.stdout, dry.stdout
    assert victim.read_bytes() == damaged

    done = pilog("repair", "-c", config)
    assert done.returncode == 0, done.stderr
    assert f"repaired {victim.name}" in done.stdout, done.stdout
    assert "1 record lost" in done.stdout, done.stdout
    (kept,) = (data / "quarantine").glob(f"{victim.name}.*.damaged")
    assert kept.read_bytes() == damaged
    verify = pilog("verify", "-c", config)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # The lost record is a Gap at its own seq; everything around it is as it was.
    events = {e["seq"]: e for e in tail_json("-c", config, "--from", "0")}
    assert events[lost_seq]["type"] == "gap", events[lost_seq]
    assert events[lost_seq]["first_seq"] == events[lost_seq]["last_seq"] == lost_seq
    assert sorted(events) == list(range(min(events), max(events) + 1))
    assert [e for e in events.values() if e["type"] == "repair" and victim.name in e["segment"]]
    state = status_json("-c", config)
    assert state["gaps"] >= 1
    assert state["repairs"] >= 1
    assert pilog("repair", "-c", config).stdout.startswith("nothing to repair")

    # A sink now reads through: every reading of the log arrives, once.
    want = set(readings(data).values())
    with Receiver() as rx:
        sink = write_config(
            tmp_path / "sink.toml", data, log=LOG, sensors=[], extra=http_sink_toml(rx.url)
        )
        with run_pilog(sink) as p:
            p.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")
            rx.wait_for(lambda r: want <= r.ids(), timeout=60)
            assert p.stop() == 0, p.stderr.text()
        assert rx.ids() == want
        assert rx.duplicates == 0


def test_a_missing_middle_segment_becomes_gaps_for_exactly_its_seqs(tmp_path: Path) -> None:
    data, config = fill_log(tmp_path)
    segments = sorted((data / "log").glob("*.seg"))
    gone = segments[1]
    first = int(gone.name.split(".")[0])
    last = int(segments[2].name.split(".")[0]) - 1
    gone.unlink()
    assert pilog("verify", "-c", config).returncode == 1

    done = pilog("repair", "-c", config)
    assert done.returncode == 0, done.stderr
    assert f"lost seq {first}..{last}" in done.stdout, done.stdout
    assert pilog("verify", "-c", config).returncode == 0
    events = tail_json("-c", config, "--from", "0")
    gaps = [e["seq"] for e in events if e["type"] == "gap" and e["first_seq"] == e["seq"]]
    assert set(range(first, last + 1)) <= set(gaps)
