"""The control socket: how a running `pilog run` shows its live state to other processes.

`DATA_DIR/control.sock` is a Unix stream socket; a client sends one request on one line and
reads one answer line back, both msgspec-encoded JSON of the types below:
`{"cmd": "status"}` answers a `pilog.runstate.RunSnapshot`; `{"cmd": "retry", "sink": NAME}`
(NAME null: every sink) wakes sinks waiting to retry and answers a `RetryAnswer`; anything
else answers an `ErrorAnswer`. Driver health and each consumer's retry state live only in the
running process's memory; this serves them without writing to the SD card. Access is the
socket file's: owner and group (0660), like the data dir.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import msgspec

from pilog.log import naming

log = logging.getLogger("pilog.control")

SOCKET_NAME = naming.CONTROL_SOCKET
MAX_REQUEST_BYTES = 64 << 10
SUN_PATH_MAX = 107  # bytes of a Unix socket path, less the terminating NUL


class StatusRequest(msgspec.Struct, frozen=True, tag="status", tag_field="cmd"):
    """Ask for the live `RunSnapshot`."""


class RetryRequest(msgspec.Struct, frozen=True, tag="retry", tag_field="cmd"):
    """Wake sinks waiting to retry: the one named, or every one (None)."""

    sink: str | None = None


Request = StatusRequest | RetryRequest


class RetryAnswer(msgspec.Struct, frozen=True):
    woken: list[str]  # sinks that were waiting and send again now
    sinks: list[str]  # every sink of the running pilog


class ErrorAnswer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    error: str


Handler = Callable[[Request], msgspec.Struct]
A = TypeVar("A", bound=msgspec.Struct)


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """`path`, or an equivalent short one through /proc/self/fd when it is too long to bind."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class _RequestHandler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST_BYTES)
        answer: msgspec.Struct
        try:
            request = msgspec.json.decode(line, type=Request)
        except msgspec.DecodeError as e:
            answer = ErrorAnswer(f"bad request ({e}); known commands: status, retry")
        else:
            try:
                answer = self.server.answer(request)
            except Exception as e:
                log.exception("control request failed")
                answer = ErrorAnswer(f"{type(e).__name__}: {e}")
        self.wfile.write(msgspec.json.encode(answer) + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    answer: Handler


class ControlServer:
    """Serves `handler(request)` on `path` from a daemon thread until `close`."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a killed run; the LOCK proves no one else serves it
        with _short_path(path) as bind_path:
            self._server = _Server(bind_path, _RequestHandler)
        # Owner and group may connect (it takes write permission). chmod, not a umask switch:
        # the umask is the whole process's, and other threads create files meanwhile.
        os.chmod(path, 0o660)
        self._server.answer = handler
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def query(
    data_dir: Path, request: Request, answer: type[A], timeout_s: float = 3.0
) -> A | ErrorAnswer | None:
    """Ask the `pilog run` of `data_dir`; None when none answers (or not in these types)."""
    path = Path(data_dir) / SOCKET_NAME
    if not path.exists():
        return None
    try:
        with (
            _short_path(path) as connect_path,
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s,
        ):
            s.settimeout(timeout_s)
            s.connect(connect_path)
            s.sendall(msgspec.json.encode(request) + b"\n")
            with s.makefile("rb") as f:
                line = f.readline()
    except OSError:
        return None
    try:
        return msgspec.json.decode(line, type=ErrorAnswer)
    except msgspec.DecodeError:
        pass  # not an error: the answer asked for
    try:
        return msgspec.json.decode(line, type=answer)
    except msgspec.DecodeError:
        return None  # a pilog of another version: its live state is not ours to read
