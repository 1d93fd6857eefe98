"""A real, scriptable HTTP receiver of the `http-json` wire contract, on 127.0.0.1.

`Receiver` is an HTTP/1.1 server (keep-alive, so pooled clients reuse their connection) in a
daemon thread. It takes `POST` of a JSON array (gzip or not), checks every object against the
contract, de-duplicates by event id and records each request. It acknowledges the contract's
probe, an empty batch `[]`, storing nothing (outcome "probe"); given `path`, it answers 404 to a
POST anywhere else, as a real API does. A test scripts how it answers:
one-shot behaviours from a queue (`script(fail(503), reset(), ...)`), then persistent modes
(`always`, `too_large`, `poison`, `random_failures`, `token`).

Run as a process (`python -m pilog.testing.receiver --port 8000 [--fail-rate 0.2]`) its state
outlives a pilog killed with -9; `GET /_stats`, `/_ids` and `/_events` answer another process.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import json
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Annotated, Any, Literal, Self

import msgspec

CONTRACT_FIELDS = frozenset(
    {"id", "device_id", "seq", "sensor", "sensor_type", "payload", "timestamp"}
)
HEADERS_KEPT = ("idempotency-key", "authorization", "user-agent", "content-encoding")
GARBAGE = b"\x00\xffTHIS IS NOT HTTP\r\n\r\n"
POLL_S = 0.05  # how often serve_forever looks for `close`; bounds how long closing takes
WAIT_S = 30.0  # default bound of `wait_for`, never a measured result
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_HEX = re.compile(r"[0-9a-fA-F]+")

BehaviourKind = Literal["ok", "fail", "stall", "reset", "garbage"]
Poison = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How to answer one request; build one with `ok`, `fail`, `stall`, `reset`, ...

    `after_store` makes `fail` and `reset` take effect only after the request's events were
    stored: the receiver has them but the client never learns it (the ack was lost).
    """

    kind: BehaviourKind
    status: int = 200
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    after_store: bool = False
    echo_headers: bool = False  # a body repeating the request's headers, as debug pages do


def ok(status: int = 200) -> Behaviour:
    return Behaviour("ok", status)


def fail(
    status: int = 500,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    *,
    after_store: bool = False,
    echo_headers: bool = False,
) -> Behaviour:
    data = body.encode() if isinstance(body, str) else body
    extra = tuple((headers or {}).items())
    return Behaviour(
        "fail", status, data, extra, after_store=after_store, echo_headers=echo_headers
    )


def retry_after(status: int = 429, seconds: float | str = 1) -> Behaviour:
    """`status` with `Retry-After: seconds` (a number, or an HTTP date given as a string)."""
    value = seconds if isinstance(seconds, str) else f"{seconds:g}"
    body = json.dumps({"error": "slow down", "retry_after": value})
    return fail(status, body, {"Retry-After": value})


def unauthorized(status: Literal[401, 403] = 401) -> Behaviour:
    return fail(status, '{"error": "unauthorized"}', {"WWW-Authenticate": "Bearer"})


def stall(seconds: float) -> Behaviour:
    """Read the request, wait `seconds` (cut short by `close`), then answer as usual."""
    return Behaviour("stall", seconds=seconds)


def reset(*, after_store: bool = False) -> Behaviour:
    """Close the TCP connection with RST (SO_LINGER 0) instead of answering."""
    return Behaviour("reset", after_store=after_store)


def ack_lost() -> Behaviour:
    """Store the request's events, then reset the connection: stored, but never acknowledged."""
    return reset(after_store=True)


def garbage() -> Behaviour:
    """Answer bytes that are not HTTP, then close."""
    return Behaviour("garbage")


RANDOM_FAILURES = (fail(500), fail(503), reset(), ack_lost(), fail(503, after_store=True))


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the receiver saw and answered it (`status` 0: no HTTP answer)."""

    time: float
    method: str
    path: str
    status: int
    n_objects: int
    stored: int  # objects new to the receiver
    # "ok", the behaviour's kind, "invalid", "poison", "too_large", "unauthorized", "probe"
    # (an empty batch acknowledged), "not_found" (a POST outside `path`)
    outcome: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased, HEADERS_KEPT only
    peer: str = ""  # the client's "host:port": one per connection, so keep-alive shows

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


class _Refusal(Exception):
    def __init__(
        self, status: int, outcome: str, reason: str, n_objects: int = 0, **extra: Any
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.outcome = outcome
        self.n_objects = n_objects
        self.body = json.dumps({"error": reason, **extra}).encode()


class Receiver:
    """An HTTP/1.1 server of the wire contract on `host:port` (0: any free port)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        dump: Path | None = None,
        path: str | None = None,
        python_checks: bool = False,
    ) -> None:
        self.token = token
        self.python_checks = python_checks  # the previous, slower path: for benchmarks
        self.path = path  # the one endpoint for POSTs, or None: any path
        self._cond = threading.Condition(threading.RLock())
        # A struct until first read as a dict: converting every object up front would cost
        # a third of a benchmark's receiver CPU.
        self._events: dict[str, dict[str, Any] | _WireObject] = {}
        self._raw_count = 0
        self._duplicates = 0
        self._requests: list[Request] = []
        self._errors: list[str] = []
        self._queue: list[Behaviour] = []
        self._always = ok()
        self._max_objects: int | None = None
        self._poisons: list[Poison] = []
        self._random: tuple[float, random.Random, tuple[Behaviour, ...]] | None = None
        self._in_flight = 0
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._dump: IO[str] | None = dump.open("a", encoding="utf-8") if dump else None
        self._server = _Server((host, port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(POLL_S,),
            name=f"receiver:{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- where it listens, and its lifetime

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._server.server_address[0]!s}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/readings"

    def close(self) -> None:
        """Stop serving, cut open connections and stalls; safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        with self._cond:
            for conn in self._connections:
                with contextlib.suppress(OSError):  # the peer may have gone already
                    conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()
        with self._cond:
            if self._dump is not None:
                self._dump.close()
                self._dump = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scripting

    def script(self, *behaviours: Behaviour) -> None:
        """Answer the next POSTs with these, one each, before any persistent mode."""
        with self._cond:
            self._queue.extend(behaviours)

    def always(self, behaviour: Behaviour | None) -> None:
        """Answer with `behaviour` once the script is used up (None: `ok()` again)."""
        with self._cond:
            self._always = behaviour or ok()

    def too_large(self, max_objects: int | None) -> None:
        """Answer 413 to any request of more than `max_objects` objects (None: no limit)."""
        with self._cond:
            self._max_objects = max_objects

    def poison(self, event: str | Poison) -> None:
        """Refuse with 400, naming it, any request holding this event id (or a match)."""
        with self._cond:
            self._poisons.append(event if callable(event) else lambda obj: obj["id"] == event)

    def random_failures(
        self, rate: float, seed: int = 0, modes: tuple[Behaviour, ...] = RANDOM_FAILURES
    ) -> None:
        """Answer a seeded-random `rate` of unscripted POSTs with one of `modes` (0: off)."""
        with self._cond:
            self._random = (rate, random.Random(seed), modes) if rate > 0 else None

    def clear_modes(self) -> None:
        """Forget the script and every persistent mode; keep the received events."""
        with self._cond:
            self._queue.clear()
            self._always = ok()
            self._max_objects = None
            self._poisons.clear()
            self._random = None

    # -- what it received

    @property
    def events(self) -> dict[str, dict[str, Any]]:
        """Event id → the first copy received, in arrival order."""
        with self._cond:
            return {k: self._as_dict(k) for k in self._events}

    def _as_dict(self, event_id: str) -> dict[str, Any]:
        obj = self._events[event_id]
        if isinstance(obj, _WireObject):
            obj = self._events[event_id] = _to_dict(obj)
        return obj

    def ids(self) -> set[str]:
        with self._cond:
            return set(self._events)

    def id_list(self) -> list[str]:
        """Event ids in arrival order."""
        with self._cond:
            return list(self._events)

    @property
    def raw_count(self) -> int:
        """Objects in the requests that were stored, duplicates included."""
        with self._cond:
            return self._raw_count

    @property
    def duplicates(self) -> int:
        """Objects whose id was already stored."""
        with self._cond:
            return self._duplicates

    @property
    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._requests)

    @property
    def validation_errors(self) -> list[str]:
        """Why each request that broke the contract was refused; a correct client has none."""
        with self._cond:
            return list(self._errors)

    def stats(self) -> dict[str, int]:
        """Counts for another process; `acks_lost`: requests stored but answered a failure."""
        with self._cond:
            return {
                "raw_count": self._raw_count,
                "unique": len(self._events),
                "duplicates": self._duplicates,
                "requests": len(self._requests),
                "validation_errors": len(self._errors),
                "acks_lost": sum(r.outcome == "ack_lost" for r in self._requests),
            }

    def wait_for(self, until: int | Callable[[Receiver], bool], timeout: float = WAIT_S) -> None:
        """Block until `until` unique events arrived, or `until(receiver)` holds.

        Raises TimeoutError, with the receiver's stats, when `timeout` passes first.
        The predicate runs under the receiver's lock and may read any of its properties.
        """
        if isinstance(until, int):
            count = until

            def predicate() -> bool:
                return len(self._events) >= count
        else:
            pred = until

            def predicate() -> bool:
                return pred(self)

        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"receiver still waiting after {timeout}s: {self.stats()}")

    # -- serving one POST (called from the handler threads)

    def _next_behaviour(self) -> Behaviour:
        with self._cond:
            if self._queue:
                return self._queue.pop(0)
            if self._random is not None:
                rate, rng, modes = self._random
                if rng.random() < rate:
                    return rng.choice(modes)
            return self._always

    @property
    def in_flight(self) -> int:
        """POSTs read and not yet answered (a stall holds one)."""
        with self._cond:
            return self._in_flight

    def _serve_post(self, handler: _Handler, body: bytes) -> None:
        with self._cond:
            self._in_flight += 1
            self._cond.notify_all()
        try:
            self._answer_post(handler, body)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def _answer_post(self, handler: _Handler, body: bytes) -> None:
        if self.path is not None and handler.path.split("?")[0] != self.path:
            self._record(handler, 404, "not_found", 0)
            handler.answer(404, b'{"error": "not found"}')
            return
        behaviour = self._next_behaviour()
        if behaviour.kind == "stall":
            # Closed while stalling: the answer never comes.
            behaviour = reset() if self._closing.wait(behaviour.seconds) else ok()
        if behaviour.kind != "ok" and not behaviour.after_store:
            n = _count(body, handler.headers.get("Content-Encoding"))
            self._record(handler, behaviour.status if behaviour.kind == "fail" else 0, behaviour, n)
            handler.act(behaviour)
            return
        try:
            objects = self._check(handler, body)
        except _Refusal as refusal:
            with self._cond:
                if refusal.outcome == "invalid":
                    self._errors.append(str(refusal))
                self._record(handler, refusal.status, refusal.outcome, refusal.n_objects)
            handler.answer(refusal.status, refusal.body)
            return
        with self._cond:
            stored = self._store(objects)
            status = 0 if behaviour.kind == "reset" else behaviour.status
            how = "probe" if not objects and behaviour.kind == "ok" else behaviour
            self._record(handler, status, how, len(objects), stored)
        if behaviour.kind == "ok":
            summary = {"accepted": len(objects), "new": stored}
            handler.answer(behaviour.status, json.dumps(summary).encode())
        else:
            handler.act(behaviour)

    def _check(self, handler: _Handler, body: bytes) -> list[dict[str, Any]] | list[_WireObject]:
        """The request's objects; raises _Refusal for what a real API would refuse."""
        if self.token is not None and handler.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            raise _Refusal(401, "unauthorized", "missing or wrong bearer token")
        objects = _decode(body, handler.headers.get("Content-Encoding"), self.python_checks)
        with self._cond:
            if self._max_objects is not None and len(objects) > self._max_objects:
                reason = f"{len(objects)} objects, more than {self._max_objects}"
                raise _Refusal(413, "too_large", reason, len(objects))
            for obj in objects if self._poisons else ():
                as_dict = _to_dict(obj)
                if any(p(as_dict) for p in self._poisons):
                    reason = f"event {as_dict['id']} refused"
                    raise _Refusal(400, "poison", reason, len(objects), id=as_dict["id"])
        return objects

    def _store(self, objects: list[dict[str, Any]] | list[_WireObject]) -> int:
        new = 0
        for obj in objects:
            self._raw_count += 1
            event_id = obj.id if isinstance(obj, _WireObject) else obj["id"]
            if event_id in self._events:
                self._duplicates += 1
                continue
            self._events[event_id] = obj
            new += 1
            if self._dump is not None:
                self._dump.write(json.dumps(_to_dict(obj), separators=(",", ":")) + "\n")
        if self._dump is not None:
            self._dump.flush()
        return new

    def _record(
        self, handler: _Handler, status: int, how: Behaviour | str, n: int, stored: int = 0
    ) -> None:
        outcome = how if isinstance(how, str) else how.kind
        if isinstance(how, Behaviour) and how.after_store:
            outcome = "ack_lost"
        headers = {k: v for k in HEADERS_KEPT if (v := handler.headers.get(k)) is not None}
        peer = "{}:{}".format(*handler.client_address[:2])
        request = Request(
            time.time(), "POST", handler.path, status, n, stored, outcome, headers, peer
        )
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def _count(body: bytes, encoding: str | None) -> int:
    """How many objects a request holds, 0 when it is not a valid one."""
    try:
        return len(_decode(body, encoding))
    except _Refusal:
        return 0


def _decode(
    body: bytes, encoding: str | None, python_checks: bool = False
) -> list[dict[str, Any]] | list[_WireObject]:
    if encoding not in (None, "", "identity", "gzip"):
        raise _Refusal(415, "invalid", f"unsupported Content-Encoding {encoding!r}")
    if encoding == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as e:
            raise _Refusal(400, "invalid", f"body is not gzip: {e}") from e
    fast = None if python_checks else _decode_fast(body)
    if fast is not None:
        return fast
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _Refusal(400, "invalid", f"body is not JSON: {e}") from e
    if not isinstance(data, list):
        raise _Refusal(400, "invalid", "body must be a JSON array")
    for i, obj in enumerate(data):
        problem = contract_problem(obj)
        if problem:
            raise _Refusal(400, "invalid", f"object {i}: {problem}")
    return data


_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _WireObject(msgspec.Struct, forbid_unknown_fields=True):
    """The types and presence `contract_problem` checks, for msgspec to check in C."""

    id: _NonEmpty
    device_id: _NonEmpty
    seq: Annotated[int, msgspec.Meta(ge=0)]
    sensor: _NonEmpty
    sensor_type: _NonEmpty
    payload: dict[str, int | float | str | bool]
    # `\Z`, not `$`: msgspec searches, and `$` would let a trailing newline through.
    timestamp: Annotated[str, msgspec.Meta(pattern=f"^(?:{_RFC3339.pattern})\\Z")]


_wire_decoder = msgspec.json.Decoder(list[_WireObject])


def _decode_fast(body: bytes) -> list[_WireObject] | None:
    """The objects of a body every object of which keeps the contract, checked as
    `contract_problem` does; None when anything is off, for the slow path to say what.

    A benchmark's receiver must not be the bottleneck it measures: the types, presence and
    timestamp pattern are checked by msgspec in C, the id's shape and the date's validity
    per object, each epoch's hex once.
    """
    try:
        wire = _wire_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    epochs: set[str] = set()
    fromisoformat = dt.datetime.fromisoformat
    for w in wire:
        seq, device, eid = w.seq, w.device_id, w.id
        epoch = eid[len(device) + 1 : -len(str(seq)) - 1]
        if eid != f"{device}:{epoch}:{seq}":
            return None
        if epoch not in epochs:
            if not _HEX.fullmatch(epoch):
                return None
            epochs.add(epoch)
        try:
            fromisoformat(w.timestamp.upper())
        except ValueError:
            return None
    return wire


def _to_dict(obj: dict[str, Any] | _WireObject) -> dict[str, Any]:
    """An object as `json.loads` gives it (the keys in the contract's order)."""
    if isinstance(obj, _WireObject):
        as_dict: dict[str, Any] = msgspec.to_builtins(obj)
        return as_dict
    return obj


def contract_problem(obj: object) -> str | None:
    """Why `obj` is not a reading object of the wire contract, or None when it is one."""
    if not isinstance(obj, dict):
        return f"not an object: {type(obj).__name__}"
    if set(obj) != CONTRACT_FIELDS:
        missing, extra = sorted(CONTRACT_FIELDS - set(obj)), sorted(set(obj) - CONTRACT_FIELDS)
        return f"fields differ from the contract: missing {missing}, unexpected {extra}"
    for name in ("id", "device_id", "sensor", "sensor_type", "timestamp"):
        if not isinstance(obj[name], str) or not obj[name]:
            return f"{name} must be a non-empty string"
    seq, device, eid = obj["seq"], obj["device_id"], obj["id"]
    if type(seq) is not int or seq < 0:
        return "seq must be a non-negative integer"
    epoch = eid[len(device) + 1 : -len(str(seq)) - 1]
    if eid != f"{device}:{epoch}:{seq}" or not _HEX.fullmatch(epoch):
        return f"id {eid!r} is not '{{device_id}}:{{epoch}}:{{seq}}'"
    payload = obj["payload"]
    if not isinstance(payload, dict) or not all(
        isinstance(v, int | float | str | bool) for v in payload.values()
    ):
        return "payload must be an object of numbers, strings and booleans"
    if not _RFC3339.fullmatch(obj["timestamp"]):
        return f"timestamp {obj['timestamp']!r} is not RFC 3339"
    try:
        dt.datetime.fromisoformat(obj["timestamp"].upper())
    except ValueError:
        return f"timestamp {obj['timestamp']!r} is not a valid date and time"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):  # a client that went away is routine here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: pooled clients reuse the connection
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.receiver._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.receiver._track(self.connection, add=False)
        super().finish()

    def do_POST(self) -> None:
        body = self._read_body()
        if body is not None:
            self.server.receiver._serve_post(self, body)

    def do_GET(self) -> None:
        rx = self.server.receiver
        views: dict[str, Callable[[], object]] = {
            "/_stats": rx.stats,
            "/_ids": rx.id_list,
            "/_events": lambda: list(rx.events.values()),
        }
        view = views.get(self.path.split("?")[0])
        if view is None:
            self.answer(404, b'{"error": "not found"}')
        else:
            self.answer(200, json.dumps(view()).encode())

    def _read_body(self) -> bytes | None:
        try:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return b"".join(self._chunks())
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if len(body) < length:
                # The client went away mid-request (killed, timed out): nothing to answer.
                self.close_connection = True
                return None
            return body
        except ValueError:
            self.close_connection = True  # the framing is lost: no next request on it
            self.answer(400, b'{"error": "bad Content-Length or chunk size"}')
            return None

    def _chunks(self) -> Iterator[bytes]:
        while size := int(self.rfile.readline().split(b";")[0], 16):
            yield self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers

    def answer(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
        if status in (204, 304):
            body = b""  # these answers have no body; bytes sent anyway would poison keep-alive
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the client gave up (a stall outlived its timeout)

    def act(self, behaviour: Behaviour) -> None:
        if behaviour.kind == "reset":
            self._abort()
        elif behaviour.kind == "garbage":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.write(GARBAGE)
        else:
            body = behaviour.body
            if behaviour.echo_headers:
                body = "\n".join(f"{k}: {v}" for k, v in self.headers.items()).encode()
            reason = f'{{"error": "scripted {behaviour.status}"}}'.encode()
            self.answer(behaviour.status, reason if body is None else body, behaviour.headers)

    def _abort(self) -> None:
        """Close with RST: SO_LINGER 0, then the real close (makefile objects hold the fd)."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server.receiver._track(self.connection, add=False)
        self.connection.close()
        self.rfile.close()  # the last reference: the kernel sends RST now

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded, not printed


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, printing the URL first; `--dump` appends NDJSON live."""
    parser = argparse.ArgumentParser(prog="python -m pilog.testing.receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token", default=None)
    parser.add_argument("--path", default=None, help="answer 404 to POSTs elsewhere")
    parser.add_argument("--dump", type=Path, default=None, help="append stored objects here")
    parser.add_argument(
        "--python-checks",
        action="store_true",
        help="check each object in Python only, the slower path (for benchmarks)",
    )
    args = parser.parse_args(argv)
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # the server's threads inherit the mask
    with Receiver(
        args.host,
        args.port,
        token=args.token,
        dump=args.dump,
        path=args.path,
        python_checks=args.python_checks,
    ) as rx:
        rx.random_failures(args.fail_rate, args.seed)
        print(rx.url, flush=True)
        signal.sigwait(stop)
        stats = rx.stats()
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
