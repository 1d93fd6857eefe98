"""The control socket: how a running `pilog run` shows its live state to other processes.

`DATA_DIR/control.sock` is a Unix stream socket; a client sends one JSON object on one line
(`{"cmd": "status"}`) and reads one JSON object back. Driver health and each consumer's retry
state live only in the running process's memory; this serves them without writing to the SD
card. Access is the socket file's: owner and group (0660), like the data dir.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pilog.log import naming

log = logging.getLogger("pilog.control")

SOCKET_NAME = naming.CONTROL_SOCKET
MAX_REQUEST_BYTES = 64 << 10
SUN_PATH_MAX = 107  # bytes of a Unix socket path, less the terminating NUL

Handler = Callable[[dict[str, Any]], dict[str, Any]]


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
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
            answer = self.server.answer(request)
        except ValueError as e:
            answer = {"error": f"bad request: {e}"}
        except Exception as e:
            log.exception("control request failed")
            answer = {"error": f"{type(e).__name__}: {e}"}
        self.wfile.write(json.dumps(answer, default=str).encode() + b"\n")


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


def query(data_dir: Path, request: dict[str, Any], timeout_s: float = 3.0) -> dict[str, Any] | None:
    """Ask the `pilog run` of `data_dir`; None when none answers."""
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
            s.sendall(json.dumps(request).encode() + b"\n")
            with s.makefile("rb") as f:
                line = f.readline()
    except OSError:
        return None
    try:
        answer = json.loads(line)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
