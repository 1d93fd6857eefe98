"""JSON objects, one per line, from a TCP server (a gateway, an ESP32, a socat bridge)."""

from __future__ import annotations

import socket
from typing import ClassVar

import msgspec

from pilog.drivers.base import READ_WAIT_S, DriverContext, Payload, StreamingDriver
from pilog.drivers.fields import FieldError, FieldSelector, FieldSpec, decode_json
from pilog.drivers.serialport import LineFramer

RECV_BYTES = 65536


class TcpJsonOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str
    port: int
    fields: FieldSpec = None  # not set: every top-level number, boolean and string
    optional_fields: FieldSpec = None  # taken when present in a document
    connect_timeout_ms: int = 5000
    max_line_bytes: int = 65536

    def __post_init__(self) -> None:
        FieldSelector(self.fields, self.optional_fields)  # a bad path or name is a config error


class TcpJsonDriver(StreamingDriver):
    """Reads newline-delimited JSON objects from host:port; a lost connection raises.

    The runtime answers the raise by closing the driver and reconnecting with backoff.
    A line that is not a JSON object with the configured fields is rejected.
    """

    name: ClassVar[str] = "tcp_json"
    description: ClassVar[str] = "JSON objects, one per line, from a TCP connection"
    sensor_type: ClassVar[str] = "tcp_json"
    Options = TcpJsonOptions

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        self._opts: TcpJsonOptions = ctx.options
        self._fields = FieldSelector(self._opts.fields, self._opts.optional_fields)
        self._sock: socket.socket | None = None
        self._framer = LineFramer(self._opts.max_line_bytes, self.reject)

    def open(self) -> None:
        address = (self._opts.host, self._opts.port)
        sock = socket.create_connection(address, timeout=self._opts.connect_timeout_ms / 1000)
        # Keepalive: a peer that vanished without a FIN (power cut) eventually errors a recv.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(READ_WAIT_S)
        self._sock = sock
        self._framer = LineFramer(self._opts.max_line_bytes, self.reject)

    def read(self) -> list[Payload]:
        """Wait up to READ_WAIT_S for bytes; return the objects in the lines they completed."""
        if self._sock is None:
            raise ConnectionError(f"tcp_json {self._where()}: not connected")
        try:
            data = self._sock.recv(RECV_BYTES)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError(f"tcp_json {self._where()}: connection closed by the peer")
        out: list[Payload] = []
        for line in self._framer.feed(data):
            payload = self._decode(line)
            if payload is not None:
                out.append(payload)
        return out

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _decode(self, line: bytes) -> Payload | None:
        try:
            doc = decode_json(line)
        except msgspec.DecodeError:
            self.reject("line is not valid JSON")
            return None
        try:
            return self._fields.extract(doc, self.reject)
        except FieldError as e:
            self.reject(str(e))
            return None

    def _where(self) -> str:
        return f"{self._opts.host}:{self._opts.port}"


DRIVER = TcpJsonDriver
