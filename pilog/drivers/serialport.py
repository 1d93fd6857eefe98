"""Serial transport for drivers: a pyserial port, a line framer, a line-driver base.

`SerialPort` reads raw bytes (binary protocols such as PMS5003 use it directly) and turns a
vanished device into `PortLostError`, an OSError, so the runtime closes the driver and reopens
it with backoff. `LineFramer` cuts bytes into lines and rejects what cannot be a line;
`SerialLineDriver` joins the two for text protocols (NMEA, MightyOhm, generic lines).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec
import serial

from pilog.drivers.base import READ_WAIT_S, DriverContext, Payload, StreamingDriver
from pilog.drivers.transports import device_error
from pilog.errors import PilogError

_TERMINATORS = b"\r\n"


class PortLostError(PilogError, OSError):
    """The serial device vanished or failed under a read (unplugged, hung up)."""


class BadLineError(ValueError):
    """A line that is not valid input; its message is the reject reason."""


class SerialOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Options every serial-line driver takes."""

    port: str  # /dev/ttyUSB0, or better a stable /dev/serial/by-id/... name
    baud: int = 9600


class SerialPort:
    """A pyserial port opened for reading, 8N1, with reads bounded by READ_WAIT_S."""

    def __init__(self, port: str, baud: int) -> None:
        self.port = port
        self.baud = baud
        self._serial: Any = None

    def open(self) -> None:
        """Open the device; an OSError naming the port and the fix if it will not open."""
        try:
            self._serial = serial.Serial(self.port, self.baud, timeout=READ_WAIT_S)
        except OSError as e:  # serial.SerialException is one, with the errno of the open
            raise device_error(e, self.port, "serial") from e

    def read(self) -> bytes:
        """Wait up to READ_WAIT_S for bytes; return what arrived (b"" if nothing did)."""
        if self._serial is None:
            raise PortLostError(f"serial port {self.port} is not open")
        try:
            first: bytes = self._serial.read(1)
            if not first:
                return b""
            # Take the rest of the burst in one go rather than a syscall per byte.
            waiting = self._serial.in_waiting
            return first + (self._serial.read(waiting) if waiting else b"")
        except (OSError, serial.SerialException) as e:
            # A hung-up tty reads as EIO, or as "ready but no data"; both mean the device
            # went away and only a reopen (after it comes back) can help.
            raise PortLostError(f"serial port {self.port} lost: {e}") from e

    def close(self) -> None:
        """Release the device; never raises."""
        port, self._serial = self._serial, None
        if port is not None:
            # A vanished device may fail to close; there is nothing left to release then.
            with contextlib.suppress(OSError, serial.SerialException):
                port.close()


class LineFramer:
    """Cuts a byte stream into lines; rejects overlong lines and lines with NUL bytes inside.

    CR, LF and CRLF all end a line; empty lines are skipped. A line longer than
    `max_line_bytes` is rejected once and dropped up to its end.
    """

    def __init__(self, max_line_bytes: int, reject: Callable[[str], None]) -> None:
        self.max_line_bytes = max_line_bytes
        self._reject = reject
        self._buf = bytearray()
        self._skipping = False  # inside an overlong line, already rejected

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return the lines it completed, without terminators."""
        self._buf += data
        lines: list[bytes] = []
        while True:
            end = _find_terminator(self._buf)
            if end < 0:
                break
            raw = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if self._skipping:
                self._skipping = False
                continue
            line = self._checked(raw)
            if line:
                lines.append(line)
        if len(self._buf) > self.max_line_bytes:
            if not self._skipping:
                self._reject(f"line longer than {self.max_line_bytes} bytes")
            self._skipping = True
            self._buf.clear()
        return lines

    def _checked(self, raw: bytes) -> bytes:
        # A UART idling or in break reads as NULs around power-up: those at the edges are
        # line noise; NULs inside a line mean its characters were lost.
        line = raw.strip(b"\x00")
        if len(line) > self.max_line_bytes:
            self._reject(f"line longer than {self.max_line_bytes} bytes")
            return b""
        if b"\x00" in line:
            self._reject("NUL bytes inside a line")
            return b""
        return line


def _find_terminator(buf: bytearray) -> int:
    ends = [i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0]
    return min(ends) if ends else -1


class SerialLineDriver(StreamingDriver):
    """Base of drivers reading one record per text line from a serial port.

    Subclasses implement `decode_line`: a payload, None for a line that is valid but carries
    no reading (a banner), or BadLineError whose message is the reject reason.
    """

    max_line_bytes: ClassVar[int] = 256

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        opts: SerialOptions = ctx.options
        self._port = SerialPort(opts.port, opts.baud)
        self._framer = LineFramer(self._line_limit(), self.reject)

    def _line_limit(self) -> int:
        return self.max_line_bytes

    def open(self) -> None:
        self._port.open()

    def read(self) -> list[Payload]:
        out: list[Payload] = []
        for line in self._framer.feed(self._port.read()):
            try:
                payload = self.decode_line(line)
            except BadLineError as e:
                self.reject(str(e))
                continue
            if payload is not None:
                out.append(payload)
        return out

    def close(self) -> None:
        self._port.close()

    @abc.abstractmethod
    def decode_line(self, line: bytes) -> Payload | None:
        """The reading in one line, None if it carries none; BadLineError if it is bad."""


def ascii_text(line: bytes) -> str:
    """`line` as text, if it is printable ASCII; BadLineError otherwise."""
    if any(b < 0x20 or b > 0x7E for b in line):
        raise BadLineError("non-printable bytes in line")
    return line.decode("ascii")
