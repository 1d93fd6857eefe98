"""Repairing a damaged sealed segment: every intact record kept, each lost seq a filler."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from logfiles import CREATED_NS, DEVICE, EPOCH, header, payload

from pilog.errors import CorruptionError, FormatVersionError
from pilog.log import naming
from pilog.log.format import FRAME_HEADER_BYTES, SegmentHeader, encode_frame
from pilog.log.reader import LogReader
from pilog.log.salvage import (
    SegmentRepair,
    header_damaged,
    plan_repair,
    repaired_bytes,
    rewrite_segment,
)
from pilog.testing.faultyfs import FaultyFileSystem

BASE = 1000
COUNT = 40


def segment(count: int = COUNT, base: int = BASE) -> tuple[bytearray, list[int]]:
    """Bytes of a sealed segment of `count` records from `base`, and each frame's offset."""
    data = bytearray(header(base).encode())
    offsets = []
    for seq in range(base, base + count):
        offsets.append(len(data))
        data += encode_frame(seq, payload(seq, 20 + seq % 37))
    return data, offsets


def plan(data: bytes | bytearray, count: int = COUNT) -> tuple[SegmentHeader, SegmentRepair]:
    name = naming.segment_name(BASE)
    return plan_repair(bytes(data), name, BASE, BASE + count - 1, EPOCH, DEVICE, CREATED_NS)


def filler(seq: int, previous: bytes | None) -> bytes:
    return f"lost {seq} after {previous[:6]!r}".encode() if previous else f"lost {seq}".encode()


def test_a_flipped_bit_loses_only_its_record() -> None:
    data, offsets = segment()
    data[offsets[7] + FRAME_HEADER_BYTES + 3] ^= 0x10
    _, repair = plan(data)
    assert repair.lost == [(BASE + 7, BASE + 7)]
    assert [d.offset for d in repair.damage] == [offsets[7]]
    assert "checksum" in repair.damage[0].reason
    want = {s: payload(s, 20 + s % 37) for s in range(BASE, BASE + COUNT) if s != BASE + 7}
    assert dict(repair.kept) == want
    assert "lost seq 1007" in repair.describe()


def test_a_zeroed_page_loses_the_records_it_touches() -> None:
    data, offsets = segment()
    start, stop = offsets[10] + 5, offsets[20] + 2
    data[start:stop] = bytes(stop - start)
    _, repair = plan(data)
    assert repair.lost == [(BASE + 10, BASE + 20)]
    assert len(repair.kept) == COUNT - 11


def test_a_torn_header_is_rebuilt_and_every_record_kept() -> None:
    data, _ = segment()
    data[0:20] = bytes(20)
    head, repair = plan(data)
    assert repair.header_rebuilt
    assert head.epoch == EPOCH
    assert head.base_seq == BASE
    assert repair.lost == []
    assert len(repair.kept) == COUNT


def test_a_damaged_version_byte_is_header_damage_not_a_newer_format() -> None:
    data, _ = segment()
    data[8] = 0  # the version byte: the header's checksum no longer holds
    head, repair = plan(data)
    assert repair.header_rebuilt
    assert head.version == 1
    assert repair.damage[0].reason == "header: header checksum mismatch"
    assert len(repair.kept) == COUNT


def test_the_newest_segment_keeps_its_frames_up_to_its_tail_under_a_rebuilt_header() -> None:
    data, offsets = segment()
    data[8] = 3  # the version byte
    torn = bytes(data[: offsets[-1] + 9]) + bytes(4096)  # a torn last frame, then zeros
    assert header_damaged(torn, naming.segment_name(BASE))
    head, repair = plan_repair(torn, naming.segment_name(BASE), BASE, None, EPOCH, DEVICE, 0)
    assert repair.header_rebuilt
    assert (head.version, head.epoch, head.base_seq) == (1, EPOCH, BASE)
    assert [d.reason for d in repair.damage] == ["header: header checksum mismatch"]
    assert [s for s, _ in repair.kept] == list(range(BASE, BASE + COUNT - 1))
    assert (repair.last_seq, repair.lost) == (BASE + COUNT - 2, [])


def test_a_header_torn_before_any_frame_is_not_damage_for_repair() -> None:
    data, _ = segment(count=0)
    data[-1] ^= 0xFF
    assert not header_damaged(bytes(data) + bytes(4096), naming.segment_name(BASE))
    intact, _ = segment()
    assert not header_damaged(bytes(intact), naming.segment_name(BASE))


def test_a_cut_segment_loses_its_tail_up_to_the_successor() -> None:
    data, offsets = segment()
    _, repair = plan(data[: offsets[30] + 9])
    assert repair.lost == [(BASE + 30, BASE + COUNT - 1)]
    assert repair.damage[0].offset == offsets[30]


def test_a_segment_ending_before_its_successor_starts_is_damage_too() -> None:
    data, _ = segment(COUNT - 3)
    _, repair = plan(data)
    assert repair.lost == [(BASE + COUNT - 3, BASE + COUNT - 1)]
    assert repair.damage[0].reason == "the segment ends early"


def test_bytes_after_the_last_record_lose_nothing() -> None:
    data, _ = segment()
    _, repair = plan(data + b"\x00" * 64)
    assert repair.lost == []
    assert repair.damage[0].reason == "zero-filled space in a sealed segment"
    _, repair = plan(data + os.urandom(40))
    assert repair.lost == []
    assert repair.damage


def test_an_undamaged_segment_has_nothing_to_repair() -> None:
    data, _ = segment()
    _, repair = plan(data)
    assert repair.damage == []
    assert repair.lost == []


def test_a_segment_of_another_log_or_format_is_left_alone() -> None:
    data, _ = segment()
    other = bytearray(header(BASE, epoch=bytes(16)).encode()) + data[len(header(BASE).encode()) :]
    with pytest.raises(CorruptionError, match="another log"):
        plan(other)
    newer = bytearray(header(BASE, version=2).encode()) + data[len(header(BASE).encode()) :]
    with pytest.raises(FormatVersionError):
        plan(newer)


def test_rewriting_keeps_the_original_in_quarantine_and_reads_through(tmp_path: Path) -> None:
    log_dir, quarantine = tmp_path / "log", tmp_path / "quarantine"
    log_dir.mkdir()
    quarantine.mkdir()
    data, offsets = segment()
    data[offsets[3] + 1] ^= 0xFF
    path = log_dir / naming.segment_name(BASE)
    path.write_bytes(data)
    os.utime(path, ns=(CREATED_NS, CREATED_NS))
    successor, _ = segment(5, BASE + COUNT)
    (log_dir / naming.segment_name(BASE + COUNT)).write_bytes(successor)
    assert not LogReader(log_dir).verify().ok

    head, repair = plan(data)
    kept = rewrite_segment(
        path, quarantine, bytes(data), repaired_bytes(head, repair, filler), CREATED_NS + 1
    )

    assert kept.read_bytes() == data
    assert path.stat().st_mtime_ns == CREATED_NS  # retention still ages it from its sealing
    assert not list(log_dir.glob("*" + naming.REPAIR_SUFFIX))
    report = LogReader(log_dir).verify()
    assert report.ok, report.errors
    records = list(LogReader(log_dir).read_from(BASE))
    assert [s for s, _ in records] == list(range(BASE, BASE + COUNT + 5))
    got = dict(records)
    assert got[BASE + 3] == b"lost 1003 after b'<1002>'"
    assert got[BASE + 4] == payload(BASE + 4, 20 + (BASE + 4) % 37)


def test_a_rewritten_segment_and_its_kept_original_survive_a_power_cut(tmp_path: Path) -> None:
    log_dir, quarantine = tmp_path / "log", tmp_path / "quarantine"
    log_dir.mkdir()
    quarantine.mkdir()
    data, offsets = segment()
    data[offsets[3] + 1] ^= 0xFF
    path = log_dir / naming.segment_name(BASE)
    path.write_bytes(data)
    head, repair = plan(data)
    new = repaired_bytes(head, repair, filler)
    fs = FaultyFileSystem(seed=3)

    kept = rewrite_segment(path, quarantine, bytes(data), new, CREATED_NS + 1, fs=fs)
    fs.crash(unsynced="none")

    assert path.read_bytes() == new
    assert kept.read_bytes() == data


@settings(max_examples=200, deadline=None)
@given(
    spans=st.lists(
        st.tuples(st.integers(0, 4000), st.integers(1, 300), st.sampled_from(["zero", "random"])),
        min_size=1,
        max_size=4,
    ),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
    seed=st.binary(min_size=300, max_size=300),
)
def test_damage_anywhere_keeps_every_untouched_record(
    spans: list[tuple[int, int, str]], cut: int | None, seed: bytes
) -> None:
    original, offsets = segment()
    data = bytearray(original)
    touched = bytearray(len(data))
    for at, length, kind in spans:
        start = min(at, len(data) - 1)
        stop = min(start + length, len(data))
        data[start:stop] = bytes(stop - start) if kind == "zero" else seed[: stop - start]
        touched[start:stop] = b"\x01" * (stop - start)
    if cut is not None:
        data = data[: min(cut, len(data))]
        touched[len(data) :] = b"\x01" * (len(touched) - len(data))
    head, repair = plan(data)
    kept = dict(repair.kept)
    header_len = offsets[0]
    header_intact = not any(touched[:header_len])
    ends = [*offsets[1:], len(original)]
    for i, (start, stop) in enumerate(zip(offsets, ends, strict=True)):
        seq = BASE + i
        if seq in kept:
            assert kept[seq] == payload(seq, 20 + seq % 37)  # never a wrong record
        elif not any(touched[start:stop]):
            # An untouched frame is lost only when the damage before it also hid its seq:
            # never, since every frame names its own seq.
            pytest.fail(f"intact seq {seq} lost ({repair.describe()})")
    assert head.base_seq == BASE
    if repair.header_rebuilt:
        assert not header_intact
    # The rewritten segment is whole: dense, every frame checked.
    rebuilt = repaired_bytes(head, repair, filler)
    assert len(repair.lost) == 0 or rebuilt != bytes(original)
    assert (data == original) == (repair.damage == [])
