"""Plantower PMS5003/PMS7003 UART frames: find, check and decode them in a byte stream.

Layout (PMS5003 datasheet, "Appendix I: PMS5003 transport protocol - Active Mode"; the
PMS7003 datasheet names byte 28 the version and byte 29 the error code), big-endian:

    0-1    0x42 0x4D            start characters
    2-3    frame length         2 * 13 + 2 = 28: the bytes after this field
    4-9    PM1.0, PM2.5, PM10   ug/m3, "CF=1, standard particle"
    10-15  PM1.0, PM2.5, PM10   ug/m3, "under atmospheric environment"
    16-27  particles beyond 0.3, 0.5, 1.0, 2.5, 5.0, 10 um in 0.1 L of air
    28-29  reserved (version, error code)
    30-31  check code: 16-bit sum of bytes 0-29

Command answers are 8-byte frames with length 4: `42 4D 00 04 <cmd> <data> <check>`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

START = b"\x42\x4d"
MEASUREMENT_LENGTH = 28  # the length field of a 32-byte measurement frame
ACK_LENGTH = 4  # the length field of an 8-byte command answer
HEADER_BYTES = 4  # start characters and length field

_WORDS = struct.Struct(">13H")


@dataclass(frozen=True)
class Measurement:
    """The 12 data words of a measurement frame, in datasheet order."""

    pm_cf1: tuple[int, int, int]  # PM1.0, PM2.5, PM10, CF=1 (factory environment)
    pm_atm: tuple[int, int, int]  # PM1.0, PM2.5, PM10, atmospheric environment
    counts: tuple[int, int, int, int, int, int]  # > 0.3, 0.5, 1.0, 2.5, 5.0, 10 um per 0.1 L
    version: int
    error_code: int

    @property
    def all_zero(self) -> bool:
        """True when every data word is zero, as a sensor sends while its fan spins up."""
        return not any(self.pm_cf1 + self.pm_atm + self.counts)


@dataclass(frozen=True)
class CommandAck:
    """A command answer (8-byte frame), e.g. the sleep acknowledgement `42 4D 00 04 E4 00`."""

    command: int
    data: int


Frame = Measurement | CommandAck


def decode_measurement(frame: bytes) -> Measurement:
    """The data of a checked 32-byte measurement frame."""
    assert len(frame) == HEADER_BYTES + MEASUREMENT_LENGTH
    w = _WORDS.unpack_from(frame, HEADER_BYTES)
    return Measurement(
        pm_cf1=(w[0], w[1], w[2]),
        pm_atm=(w[3], w[4], w[5]),
        counts=(w[6], w[7], w[8], w[9], w[10], w[11]),
        version=w[12] >> 8,
        error_code=w[12] & 0xFF,
    )


def checksum(frame: bytes) -> int:
    """The check code a frame should carry: the 16-bit sum of all bytes before it."""
    return sum(frame[:-2]) & 0xFFFF


@dataclass
class FrameScanner:
    """Turns UART bytes into frames, resynchronising byte by byte on the start characters.

    `feed` returns the frames completed so far and, separately, why bytes were dropped.
    Bytes before the first start characters are a frame cut in half by opening the port
    mid-stream: they are dropped without complaint (`leading_bytes_dropped` counts them).
    """

    _buf: bytearray = field(default_factory=bytearray)
    _synced: bool = False  # a good frame was seen: later stray bytes are garbage, not a tail
    _resyncing: bool = False  # bytes dropped now belong to the bad frame already reported
    leading_bytes_dropped: int = 0

    def feed(self, data: bytes) -> tuple[list[Frame], list[str]]:
        """Add `data`; return the complete frames found and the reasons for what was dropped."""
        self._buf += data
        frames: list[Frame] = []
        problems: list[str] = []
        while True:
            start = self._buf.find(START)
            if start < 0:
                # Keep a trailing 0x42: it may be the first half of the next start characters.
                keep = 1 if self._buf.endswith(START[:1]) else 0
                self._drop(len(self._buf) - keep, problems)
                return frames, problems
            self._drop(start, problems)
            if len(self._buf) < HEADER_BYTES:
                return frames, problems
            length = int.from_bytes(self._buf[2:4], "big")
            if length not in (MEASUREMENT_LENGTH, ACK_LENGTH):
                # A 0x42 0x4D inside garbage or data: skip one byte and search again. The
                # reason leaves the value out: one log line per reason, not per length seen.
                problems.append("bad frame length field")
                self._skip_bad_start()
                continue
            size = HEADER_BYTES + length
            if len(self._buf) < size:
                return frames, problems
            frame = bytes(self._buf[:size])
            sent = int.from_bytes(frame[-2:], "big")
            if sent != checksum(frame):
                # Possibly a truncated frame glued to the next: resynchronise inside it.
                problems.append("bad checksum")
                self._skip_bad_start()
                continue
            del self._buf[:size]
            self._synced = True
            self._resyncing = False
            if length == MEASUREMENT_LENGTH:
                frames.append(decode_measurement(frame))
            else:
                frames.append(CommandAck(frame[4], frame[5]))

    def _skip_bad_start(self) -> None:
        del self._buf[:1]
        self._resyncing = True

    def _drop(self, n: int, problems: list[str]) -> None:
        if n <= 0:
            return
        del self._buf[:n]
        if not self._synced:
            self.leading_bytes_dropped += n
        elif not self._resyncing:
            problems.append("garbage between frames")
            self._resyncing = True  # one report per stretch, however the reads split it
