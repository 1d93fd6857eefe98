"""A TCP forwarder on 127.0.0.1 that a test puts between a sink and a real server.

The server keeps running (and keeps what it stored) while the test makes it look, to the
sink, unreachable (`stop`: connections refused), hung (`hang`: connections accepted, bytes
read and never answered) or healthy again (`start`, on the same port). The sink contract
suite (`pilog.testing.sink_contract`) drives its endpoints through one.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

ACCEPT_POLL_S = 0.05  # how often the accept loop looks at whether it should end
BUFFER_BYTES = 1 << 16


class TcpProxy:
    """Forwards `127.0.0.1:port` to `upstream` (host, port), until told otherwise."""

    def __init__(self, upstream: tuple[str, int], port: int = 0) -> None:
        self.upstream = upstream
        self.port = port
        self._lock = threading.Lock()
        self._hanging = threading.Event()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        """Forward again: hung connections are dropped, new ones are passed on."""
        self._drop_connections()
        self._hanging.clear()
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            listener.settimeout(ACCEPT_POLL_S)
            self.port = listener.getsockname()[1]
            self._listener = listener
            self._accepting = threading.Thread(
                target=self._accept, args=(listener,), name=f"proxy:{self.port}", daemon=True
            )
            self._accepting.start()

    def stop(self) -> None:
        """Refuse connections, and end those open (the client sees a reset or EOF)."""
        with self._lock:
            listener, self._listener = self._listener, None
            accepting, self._accepting = self._accepting, None
        if listener is not None:
            listener.close()
        if accepting is not None:
            accepting.join()
        self._drop_connections()

    def hang(self) -> None:
        """Accept and read, answer nothing: open connections go silent, new ones too."""
        self._hanging.set()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                if listener.fileno() == -1:
                    return
                continue
            except OSError:  # closed by stop()
                return
            client.settimeout(None)
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._conns.add(client)
        if self._hanging.is_set():
            self._pump_later(client, None)
            return
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            self._close(client)
            return
        with self._lock:
            self._conns.add(server)
        self._pump_later(client, server)
        self._pump_later(server, client)

    def _pump_later(self, src: socket.socket, dst: socket.socket | None) -> None:
        threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        """Copy src to dst until either end closes; while hanging, read and drop."""
        try:
            while data := src.recv(BUFFER_BYTES):
                if dst is not None and not self._hanging.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        self._close(src)
        if dst is not None:
            self._close(dst)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _drop_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            self._close(sock)


class ProxiedEndpoint:
    """A contract endpoint whose server a sink reaches through `proxy`: `stop`, `start` and
    `hang` act on the proxy alone, so the server keeps what it stored; `close` closes the
    proxy, then `close_server`. Subclasses set `proxy` and define `stored`."""

    proxy: TcpProxy

    def stop(self) -> None:
        self.proxy.stop()

    def start(self) -> None:
        self.proxy.start()

    def hang(self) -> None:
        self.proxy.hang()

    def close(self) -> None:
        self.proxy.close()
        self.close_server()

    def close_server(self) -> None:
        """Stop what the endpoint started besides the proxy."""
