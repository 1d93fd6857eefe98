"""Segment header and frame layout: the code form of docs/log-format.md.

All integers are little-endian. Checksums are CRC-32 (IEEE 802.3, reflected polynomial
0xEDB88320, as `zlib.crc32`).

Segment header (`HEADER_FIXED_BYTES` + device id + 4):

    magic      8  b"PILOGSEG"
    version    1  FORMAT_VERSION
    flags      1  0 (reserved)
    header_len 2  total header bytes, checksum included
    epoch     16  random id of the log, the same in every segment
    base_seq   8  seq of the segment's first frame
    created_ns 8  wall clock (ns since the Unix epoch) when the segment was made
    id_len     2  bytes of device id
    device_id  n  UTF-8
    crc        4  CRC-32 of every header byte before it

Frame (`FRAME_HEADER_BYTES` + payload):

    crc        4  CRC-32 of the 13 bytes after it and the payload (length, seq, type, payload)
    length     4  payload bytes
    seq        8  the record's seq
    type       1  FRAME_RECORD
    payload    n  opaque bytes (an encoded event)

A frame header of 17 zero bytes marks the end of data: segments are preallocated with zeros.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pilog.counts import counted
from pilog.errors import CorruptionError, FormatVersionError

MAGIC = b"PILOGSEG"
VERSION_OFFSET = len(MAGIC)  # the header's version byte
FORMAT_VERSION = 1
FRAME_RECORD = 1
FRAME_TYPES = frozenset({FRAME_RECORD})

_HEADER_FIXED = struct.Struct("<8sBBH16sQQH")
HEADER_FIXED_BYTES = _HEADER_FIXED.size  # 46
_CRC = struct.Struct("<I")
_FRAME = struct.Struct("<IIQB")
FRAME_HEADER_BYTES = _FRAME.size  # 17
_FRAME_BODY = struct.Struct("<IQB")  # what the frame checksum covers, before the payload
MAX_PAYLOAD_BYTES = 1 << 24  # 16 MiB: far above any event, small enough to reject garbage lengths
MAX_DEVICE_ID_BYTES = 255
# Every version keeps magic, version, flags and header_len first and ends its header, of at
# most this many bytes, with a CRC-32 of the bytes before it: any version's header can be
# checked for damage before its version is believed.
MAX_HEADER_BYTES = 512
EPOCH_BYTES = 16
_ZERO_FRAME_HEADER = bytes(FRAME_HEADER_BYTES)


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The fields at the start of every segment file."""

    epoch: bytes
    base_seq: int
    created_ns: int
    device_id: str
    version: int = FORMAT_VERSION

    @property
    def epoch_hex(self) -> str:
        return self.epoch.hex()

    def encode(self) -> bytes:
        device = self.device_id.encode()
        if len(device) > MAX_DEVICE_ID_BYTES:
            raise ValueError(f"device id longer than {MAX_DEVICE_ID_BYTES} bytes")
        if len(self.epoch) != EPOCH_BYTES:
            raise ValueError(f"epoch must be {EPOCH_BYTES} bytes")
        header_len = HEADER_FIXED_BYTES + len(device) + _CRC.size
        head = _HEADER_FIXED.pack(
            MAGIC,
            self.version,
            0,
            header_len,
            self.epoch,
            self.base_seq,
            self.created_ns,
            len(device),
        )
        body = head + device
        return body + _CRC.pack(zlib.crc32(body))

    @property
    def size(self) -> int:
        return HEADER_FIXED_BYTES + len(self.device_id.encode()) + _CRC.size


def decode_header(buf: bytes | memoryview, segment: str) -> SegmentHeader:
    """Parse and check a segment header; raise CorruptionError or FormatVersionError.

    The checksum is checked before the version: a damaged version byte is damage, and only
    a header written whole (its checksum holds) of another version is another format.
    """
    if len(buf) < HEADER_FIXED_BYTES:
        raise CorruptionError(segment, 0, f"header truncated ({counted(len(buf), 'byte')})")
    magic, version, _flags, header_len, epoch, base, created, id_len = _HEADER_FIXED.unpack_from(
        buf, 0
    )
    if magic != MAGIC:
        raise CorruptionError(segment, 0, f"bad magic {bytes(magic)!r}")
    if version == FORMAT_VERSION and header_len != HEADER_FIXED_BYTES + id_len + _CRC.size:
        raise CorruptionError(segment, 10, f"header length {header_len} disagrees with id length")
    if not _CRC.size < header_len <= MAX_HEADER_BYTES:
        raise CorruptionError(segment, 10, f"header length {header_len} out of range")
    if len(buf) < header_len:
        raise CorruptionError(segment, 0, f"header truncated ({len(buf)} of {header_len} bytes)")
    (crc,) = _CRC.unpack_from(buf, header_len - _CRC.size)
    if crc != zlib.crc32(buf[: header_len - _CRC.size]):
        raise CorruptionError(segment, header_len - _CRC.size, "header checksum mismatch")
    if version != FORMAT_VERSION:
        raise FormatVersionError(segment, version, FORMAT_VERSION)
    device = bytes(buf[HEADER_FIXED_BYTES : HEADER_FIXED_BYTES + id_len]).decode(errors="replace")
    return SegmentHeader(epoch=bytes(epoch), base_seq=base, created_ns=created, device_id=device)


def header_checksum_holds(buf: bytes | memoryview) -> bool:
    """True when the bytes its `header_len` field names end in their own CRC-32: a header
    written whole, whatever its version (a damaged version byte fails this)."""
    if len(buf) < HEADER_FIXED_BYTES:
        return False
    header_len = int.from_bytes(buf[10:12], "little")
    if not _CRC.size < header_len <= min(len(buf), MAX_HEADER_BYTES):
        return False
    (crc,) = _CRC.unpack_from(buf, header_len - _CRC.size)
    return bool(crc == zlib.crc32(buf[: header_len - _CRC.size]))


def encode_frame(seq: int, payload: bytes, frame_type: int = FRAME_RECORD) -> bytes:
    """One frame: checksum, length, seq, type, payload."""
    body = _FRAME_BODY.pack(len(payload), seq, frame_type)
    crc = zlib.crc32(payload, zlib.crc32(body))
    return _CRC.pack(crc) + body + payload


def frame_size(payload_len: int) -> int:
    return FRAME_HEADER_BYTES + payload_len


class FrameStatus:
    """Why `scan_frames` stopped."""

    END = "end"  # clean end of the buffer
    ZERO = "zero"  # zero-filled (preallocated) space follows
    PARTIAL = "partial"  # a frame header or payload runs past the buffer
    BAD = "bad"  # a frame failed a check; `reason` says which


@dataclass(slots=True)
class ScanResult:
    """Where and why a scan stopped. `offset` is the first byte not returned as a frame."""

    offset: int
    status: str
    reason: str = ""


def scan_frames(
    buf: bytes,
    offset: int,
    expect_seq: int,
    out: list[tuple[int, bytes]],
) -> ScanResult:
    """Append (seq, payload) of consecutive good frames in `buf` from `offset` to `out`.

    Stops at the end of the buffer, at zero-filled space, at a frame that runs past the
    buffer, or at a frame failing a check (checksum, length, type, seq not `expect_seq`).
    Never raises: the caller decides whether a stop is a torn tail or corruption.
    """
    # The hot loop of every replay: only the happy path here, `_why_stopped` classifies.
    end = len(buf)
    unpack = _FRAME.unpack_from
    crc32 = zlib.crc32
    append = out.append
    seq_expected = expect_seq
    while offset + FRAME_HEADER_BYTES <= end:
        crc, length, seq, ftype = unpack(buf, offset)
        stop = offset + FRAME_HEADER_BYTES + length
        if (
            stop > end
            or seq != seq_expected
            or ftype != FRAME_RECORD
            or crc != crc32(buf[offset + 4 : stop])
        ):
            break
        append((seq, buf[offset + FRAME_HEADER_BYTES : stop]))
        seq_expected += 1
        offset = stop
    return _why_stopped(buf, offset, seq_expected)


def _why_stopped(buf: bytes, offset: int, seq_expected: int) -> ScanResult:
    end = len(buf)
    if offset == end:
        return ScanResult(offset, FrameStatus.END)
    if offset + FRAME_HEADER_BYTES > end:
        if is_zero(buf[offset:end]):
            return ScanResult(offset, FrameStatus.ZERO)
        return ScanResult(offset, FrameStatus.PARTIAL, "frame header runs past end")
    crc, length, seq, ftype = _FRAME.unpack_from(buf, offset)
    if crc == 0 and length == 0 and seq == 0 and ftype == 0:
        return ScanResult(offset, FrameStatus.ZERO)
    if length > MAX_PAYLOAD_BYTES:
        return ScanResult(offset, FrameStatus.BAD, f"frame length {length} too large")
    stop = offset + FRAME_HEADER_BYTES + length
    if stop > end:
        return ScanResult(offset, FrameStatus.PARTIAL, "frame payload runs past end")
    if crc != zlib.crc32(buf[offset + 4 : stop]):
        return ScanResult(offset, FrameStatus.BAD, "frame checksum mismatch")
    if ftype not in FRAME_TYPES:
        return ScanResult(offset, FrameStatus.BAD, f"unknown frame type {ftype}")
    return ScanResult(offset, FrameStatus.BAD, f"seq {seq} where {seq_expected} expected")


def is_zero(buf: bytes | memoryview) -> bool:
    """True when every byte is zero (preallocated space, not data)."""
    return buf == bytes(len(buf))


def intact_frame_at(buf: bytes, pos: int) -> tuple[int, int] | None:
    """(seq, end offset) of a frame at `pos` that passes its checks, whatever its seq;
    None if there is none. For looking past damage, not for reading."""
    if pos + FRAME_HEADER_BYTES > len(buf):
        return None
    crc, length, seq, ftype = _FRAME.unpack_from(buf, pos)
    stop = pos + FRAME_HEADER_BYTES + length
    if (
        crc
        and ftype in FRAME_TYPES
        and length <= MAX_PAYLOAD_BYTES
        and stop <= len(buf)
        and zlib.crc32(buf[pos + 4 : stop]) == crc
    ):
        return seq, stop
    return None


def count_intact_frames(buf: bytes, offset: int, max_scan: int = 1 << 18) -> int:
    """Frames passing their checksum anywhere in `buf[offset:offset + max_scan]`.

    Used only after damage, to say whether anything frame-like followed it.
    """
    found = 0
    end = min(len(buf), offset + max_scan)
    pos = offset
    while pos + FRAME_HEADER_BYTES <= end:
        frame = intact_frame_at(buf, pos)
        if frame is not None:
            found += 1
            pos = frame[1]
        else:
            pos += 1
    return found
