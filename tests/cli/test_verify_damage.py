"""`pilog verify` and `pilog repair` on damage a real run's log can suffer: several damaged
segments at once, and a damaged header in the newest segment."""

from __future__ import annotations

from pathlib import Path

from helpers import pilog, run_pilog, tail_json, wait_for_seq, write_config

from pilog.log.format import FRAME_HEADER_BYTES, VERSION_OFFSET, decode_header, scan_frames
from pilog.log.naming import list_segments

LOG = {"segment_bytes": "4KiB", "max_bytes": "64MiB"}


def make_log(tmp_path: Path, events: int) -> Path:
    """Run pilog until the log holds `events` events, stop it, return the config."""
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        log=LOG,
        sensors=[{"name": "air", "interval_ms": 1, "batch": 10}],
    )
    with run_pilog(config) as run:
        wait_for_seq(tmp_path / "data", events)
        assert run.stop() == 0, run.stderr.text()
    return config


def frame_offsets(path: Path) -> list[int]:
    data = path.read_bytes()
    header = decode_header(data, path.name)
    out: list[tuple[int, bytes]] = []
    scan_frames(data, header.size, header.base_seq, out)
    offsets = [header.size]
    for _, payload in out:
        offsets.append(offsets[-1] + FRAME_HEADER_BYTES + len(payload))
    return offsets[:-1]


def patch(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_verify_reports_exactly_the_damaged_segments_and_none_after_them(
    tmp_path: Path,
) -> None:
    config = make_log(tmp_path, events=400)
    segments = [p for _, p in list_segments(tmp_path / "data" / "log")]
    assert len(segments) >= 6
    damaged: dict[str, str] = {}
    # A flipped payload byte mid-segment (bad crc) in segment 1.
    at = frame_offsets(segments[1])[5]
    patch(segments[1], at + FRAME_HEADER_BYTES + 3, b"\xff\xff\xff\xff")
    damaged[segments[1].name] = f"at offset {at}: frame checksum mismatch"
    # A damaged length field in segment 3.
    at = frame_offsets(segments[3])[2]
    patch(segments[3], at + 4, b"\xff\xff\xff\x7f")
    damaged[segments[3].name] = f"at offset {at}: frame length 2147483647 too large"
    # A torn header in segment 4, right after segment 3's damage.
    patch(segments[4], 0, bytes(30))
    damaged[segments[4].name] = "at offset 0: bad magic"

    result = pilog("verify", "-c", config)

    assert result.returncode == 1, result
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("damage:")]
    assert len(lines) == len(damaged), result.stderr
    for name, where in damaged.items():
        assert [ln for ln in lines if f"{name} {where}" in ln], (name, result.stderr)
    for intact in (s for s in segments if s.name not in damaged):
        assert intact.name not in result.stderr, result.stderr


def test_a_damaged_version_byte_in_the_newest_segment_is_damage_that_repair_rebuilds(
    tmp_path: Path,
) -> None:
    config = make_log(tmp_path, events=100)
    before = [e["seq"] for e in tail_json("-c", config, "--from", "0")]
    newest = list_segments(tmp_path / "data" / "log")[-1][1]
    header_size = frame_offsets(newest)[0]
    patch(newest, VERSION_OFFSET, b"\x02")

    verify = pilog("verify", "-c", config)
    assert verify.returncode == 1, verify
    assert f"{newest.name} at offset {header_size - 4}: header checksum mismatch" in verify.stderr
    assert "upgrade" not in verify.stderr
    refused = pilog("run", "-c", config)  # the writer does not start on damage
    assert refused.returncode != 0
    assert "pilog repair" in refused.stderr, refused.stderr

    done = pilog("repair", "-c", config)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"repaired {newest.name}" in done.stdout, done.stdout
    assert list((tmp_path / "data" / "quarantine").glob(f"{newest.name}.*.damaged"))
    after = pilog("verify", "-c", config)
    assert after.returncode == 0, after.stdout + after.stderr
    events = tail_json("-c", config, "--from", "0")
    assert [e["seq"] for e in events][: len(before)] == before  # every record kept
    assert [e for e in events if e["type"] == "repair" and e["segment"] == newest.name]
