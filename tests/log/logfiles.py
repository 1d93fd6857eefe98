"""Helpers shared by the log tests: segment files written by hand, options, reading back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilog.errors import LogError
from pilog.log import naming
from pilog.log.format import SegmentHeader, encode_frame, frame_size
from pilog.log.reader import LogReader
from pilog.log.writer import LogOptions

DEVICE = "test-box"
EPOCH = bytes(range(16))
CREATED_NS = 1_795_000_000_000_000_000


def options(**overrides: Any) -> LogOptions:
    """Options for a test log: small segments, no surprises from the defaults."""
    fields: dict[str, Any] = {
        "device_id": DEVICE,
        "segment_bytes": 4096,
        "max_bytes": 1 << 24,
        "preallocate": False,
        # The committer thread stays idle; tests commit with `sync()` and stay deterministic.
        "fsync_interval_s": 3600.0,
    }
    fields.update(overrides)
    return LogOptions(**fields)


def payload(seq: int, size: int = 24) -> bytes:
    """A recognisable payload of `size` bytes for `seq`."""
    stamp = f"<{seq}>".encode()
    return (stamp * (size // len(stamp) + 1))[:size]


@dataclass(frozen=True)
class SegmentFile:
    """A segment written by hand, with where each of its frames starts."""

    path: Path
    base: int
    header_size: int
    offsets: list[int]  # of each frame
    end: int  # first byte after the last frame


def header(base: int, epoch: bytes = EPOCH, version: int = 1) -> SegmentHeader:
    return SegmentHeader(epoch, base, CREATED_NS, DEVICE, version)


def write_segment(
    log_dir: Path, base: int, payloads: Sequence[bytes], tail: bytes = b""
) -> SegmentFile:
    """A segment of `payloads` with seqs from `base`, followed by `tail`."""
    head = header(base).encode()
    offsets = []
    pos = len(head)
    frames = []
    for i, p in enumerate(payloads):
        offsets.append(pos)
        frames.append(encode_frame(base + i, p))
        pos += frame_size(len(p))
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / naming.segment_name(base)
    path.write_bytes(head + b"".join(frames) + tail)
    return SegmentFile(path, base, len(head), offsets, pos)


def read_all(log_dir: Path, seq: int = 0) -> tuple[list[tuple[int, bytes]], LogError | None]:
    """Every record a reader returns before it stops, and the error it stopped with."""
    got: list[tuple[int, bytes]] = []
    try:
        for s, p in LogReader(log_dir).read_from(seq):
            got.append((s, bytes(p)))
    except LogError as e:
        return got, e
    return got, None
