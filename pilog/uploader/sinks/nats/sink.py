"""`nats`: one JetStream message per reading, exactly once across any outage (the `nats` extra).

Each reading is published to the subject rendered from `subject` (default `pilog.{device_id}`;
`{sensor}` and `{sensor_type}` may be used too) with header `Nats-Msg-Id` = the event id
(`{device_id}:{epoch}:{seq}`) and the `http-json` object as JSON payload. A batch is published
pipelined (every message, then every PubAck) and is `ack` only when every message got a PubAck.

The stream de-duplicates by `Nats-Msg-Id` only within its duplicate window. Beyond it, the
sink itself skips what the stream holds: on every connection, before it publishes to a subject,
it reads the subject's last message (STREAM.MSG.GET `last_by_subj`), whose header
`Pilog-Scan-From` names a stream sequence P such that every message of this device and epoch
that a retry could repeat is stored after P; it reads the subject's messages after P (an
ordered consumer, headers only) and publishes only the readings not among them. A pipelined
batch that lost message k but stored k+1.. (a leader change) thus gets k alone, whenever the
retry comes. P moves
to the last PubAck of a batch once that batch's cursor is certainly committed (at once with the
default `cursor_commit_interval = 0`, else after twice the interval plus 5 s), so a crash never
re-sends what lies before P; and only when nothing of the sink's beyond the batch is stored.
Ids of another epoch never count as stored.

Every failure drops the connection; the next `send` connects again (to any seed url) and
resumes as above, so reconnecting follows the uploader's backoff. nats-py is asyncio: the sink
runs one event loop in its own thread and `send` waits on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import msgspec

from pilog.config import SinkConfig
from pilog.counts import counted
from pilog.errors import ConfigError
from pilog.events import Event, Reading
from pilog.uploader.sink import ACK, Outcome, SinkContext, read_secret, readings, secret_env_name

try:
    from nats import errors as nats_errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.api import ConsumerConfig, DeliverPolicy
    from nats.js.client import JetStreamContext
    from nats.js.errors import NotFoundError, ServiceUnavailableError

    HAVE_NATS = True
except ImportError:  # the extra is not installed; constructing the sink says how to get it
    HAVE_NATS = False

log = logging.getLogger("pilog.uploader")

T = TypeVar("T")

MSG_ID = "Nats-Msg-Id"
SCAN_FROM = "Pilog-Scan-From"
SUBJECT_FIELDS = ("device_id", "sensor", "sensor_type")
DEFAULT_PORTS = {"nats": 4222, "tls": 4222}
CLOSE_S = 2.0  # close() waits this long for the connection and the loop thread
COMMIT_LAG_S = 5.0  # beyond 2 * cursor_commit_interval: the uploader's idle commit slack
# JetStream error codes (nats-server's errors.json) that say something about the stream.
ERR_STREAM_NOT_FOUND = 10059
ERR_MSG_TOO_LARGE = 10054  # larger than the stream's max_msg_size
ERR_STORE_FAILED = 10077  # "maximum messages/bytes exceeded" with discard = new, and others
STATUS_NO_RESPONDERS = "503"
EXTRA_FIX = "pip install 'pilog[nats]' (nats-py, pure Python)"

_encode = msgspec.json.Encoder().encode
# A subject token may not hold separators, wildcards or whitespace.
_UNSAFE_IN_SUBJECT = re.compile(r"[.*>\s\x00-\x1f\x7f]")


def subject_value(value: str) -> str:
    """`value` made safe as one subject token: `.`, `*`, `>`, whitespace become `_`."""
    return _UNSAFE_IN_SUBJECT.sub("_", value) or "_"


class NatsOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The `[[sink]]` keys of `type = "nats"`."""

    url: str = "nats://127.0.0.1:4222"  # nats:// or tls://; cluster seeds comma-separated
    subject: str = "pilog.{device_id}"  # also {sensor}, {sensor_type}
    stream: str | None = None  # default: the stream whose subjects take the subject
    token_file: Path | None = None  # else $PILOG_SINK_<NAME>_TOKEN
    username: str | None = None  # with password_file
    password_file: Path | None = None  # else $PILOG_SINK_<NAME>_PASSWORD
    ca_bundle: Path | None = None  # PEM file to verify the servers with (tls://)

    def __post_init__(self) -> None:
        urls = self.urls
        if not urls:
            raise ValueError("url must name at least one server, e.g. nats://127.0.0.1:4222")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
                raise ValueError(f"url {url!r} must be nats://host[:port] or tls://host[:port]")
            if parts.username is not None or parts.password is not None:
                raise ValueError(
                    f"url {url!r} holds credentials: put them in token_file, or username "
                    "and password_file, so that the url can be logged"
                )
        if self.token_file is not None and self.username is not None:
            raise ValueError("use either token_file or username (with password_file), not both")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        _check_subject(self.subject)

    @property
    def urls(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]


@dataclass
class _Subject:
    """What this connection knows about one subject of the stream."""

    stream: str
    scan_from: int  # the header value our next messages carry
    stored: set[int] = field(default_factory=set)  # seqs of this epoch stored after scan_from
    acked: deque[tuple[float, int]] = field(default_factory=deque)  # (monotonic, stream seq)


@dataclass
class _Pending:
    """One batch in flight: a PubAck (or error) per message, by index."""

    n: int
    done: asyncio.Event
    acks: dict[int, int] = field(default_factory=dict)  # index -> stream seq
    errors: dict[int, tuple[int, str]] = field(default_factory=dict)  # index -> (code, what)

    def answer(self, index: int, seq: int | None, code: int, what: str) -> None:
        if index in self.acks or index in self.errors:
            return
        if seq is not None:
            self.acks[index] = seq
        else:
            self.errors[index] = (code, what)
        if len(self.acks) + len(self.errors) >= self.n:
            self.done.set()


class _Connection:
    """One nats-py client, its PubAck inbox, and what it has learned about subjects."""

    def __init__(self, client: Client, inbox: str) -> None:
        self.client = client
        self.inbox = inbox
        self.subjects: dict[str, _Subject] = {}
        self.pending: _Pending | None = None
        self.failed = asyncio.Event()
        self.failure = ""
        self.denied = ""  # a permissions violation, once the server reported one
        self.next_token = 0

    def fail(self, why: str) -> None:
        if not self.failure:
            self.failure = why
        self.failed.set()


class NatsSink:
    """Publishes each batch to JetStream over one lazily made connection; see the module doc."""

    Options: ClassVar[type[NatsOptions]] = NatsOptions
    extra: ClassVar[str | None] = "nats"

    def __init__(self, config: SinkConfig, options: NatsOptions, context: SinkContext) -> None:
        if not HAVE_NATS:
            # The registry turns this into a ConfigError naming the `nats` extra.
            raise ImportError(f"the nats sink needs nats-py: {EXTRA_FIX}")
        self.config = config
        self.options = options
        self.context = context
        self._urls = options.urls
        self._where = ",".join(self._urls)
        self._device_id = subject_value(context.device_id)
        self._user, self._password, self._token = self._credentials()
        self._fix = self._credentials_fix()
        self._tls = _tls_context(config.name, options)
        # With cursor_commit_interval = 0 the uploader commits right after each ack, before its
        # next send; otherwise the commit may lag by that interval plus an idle tick.
        interval = float(config.cursor_commit_interval)
        self._commit_lag_s = 2 * interval + COMMIT_LAG_S if interval > 0 else 0.0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"nats-sink-{config.name}", daemon=True
        )
        self._thread.start()
        self._conn: _Connection | None = None
        self._closed = False

    # -- Sink ----------------------------------------------------------------------------

    def where(self) -> str:
        return self._where

    def subject(self, reading: Reading) -> str:
        return str(self.options.subject).format(
            device_id=self._device_id,
            sensor=subject_value(reading.sensor),
            sensor_type=subject_value(reading.sensor_type),
        )

    def send(self, batch: Sequence[Event]) -> Outcome:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"nats sink {self.config.name} is closed")
            deadline = time.monotonic() + float(self.config.timeout)
            return _outcome(self._run(self._send(batch, deadline), deadline))

    def probe(self, deadline: float) -> Outcome:
        """Connect and authenticate, then read the account's and the stream's info; no write."""
        with self._lock:
            return _outcome(self._run(self._probe(deadline), deadline))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._run(self._drop(), time.monotonic() + CLOSE_S)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(CLOSE_S)
                if not self._thread.is_alive():
                    self._loop.close()

    # -- on the loop thread --------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], deadline: float) -> T | Outcome:
        """Run `coro` on the sink's loop; a coroutine that overruns its deadline is cancelled."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            # The coroutine bounds itself by `deadline`; the slack only guards against a hang.
            return future.result(max(deadline - time.monotonic(), 0.0) + CLOSE_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            asyncio.run_coroutine_threadsafe(self._drop(), self._loop)
            return Outcome("retry", f"no answer from {self._where} in time")

    async def _send(self, batch: Sequence[Event], deadline: float) -> Outcome:
        messages = [
            (self.subject(r), e.seq, _encode(self.context.reading_object(e, r)))
            for e, r in readings(batch)
        ]
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                conn = await self._connection()
                if isinstance(conn, Outcome):
                    return conn
                too_large = _too_large(messages, conn.client.max_payload)
                if too_large is not None:
                    return too_large
                for subject in dict.fromkeys(s for s, _, _ in messages):
                    if subject not in conn.subjects:
                        resumed = await self._resume(conn, subject)
                        if isinstance(resumed, Outcome):
                            await self._drop()
                            return resumed
                outcome = await self._publish(conn, messages)
        except TimeoutError:
            outcome = Outcome(
                "retry", f"no PubAck from {self._where} within {float(self.config.timeout):g}s"
            )
        except (OSError, nats_errors.Error) as e:
            outcome = Outcome("retry", f"connection to {self._where} failed: {_why(e)}")
        if outcome.kind != "ack":
            await self._drop()  # the next send starts afresh: reconnect and resume
        return outcome

    async def _publish(self, conn: _Connection, messages: list[tuple[str, int, bytes]]) -> Outcome:
        """Publish what the stream lacks, pipelined; `ack` once each has its PubAck."""
        todo = [m for m in messages if m[1] not in conn.subjects[m[0]].stored]
        if not todo:
            return ACK
        pending = _Pending(len(todo), asyncio.Event())
        conn.pending = pending
        base = conn.next_token
        conn.next_token += len(todo)
        for i, (subject, seq, payload) in enumerate(todo):
            headers = {
                MSG_ID: self.context.event_id(seq),
                SCAN_FROM: str(conn.subjects[subject].scan_from),
            }
            await conn.client.publish(
                subject, payload, reply=f"{conn.inbox}.{base + i}", headers=headers
            )
        await _first(pending.done.wait(), conn.failed.wait())
        conn.pending = None
        if conn.denied:
            return Outcome("unauthorized", f"{self._where}: {conn.denied}")
        if len(pending.acks) < len(todo):
            return self._refused(conn, todo, pending)
        self._acked(conn, todo, pending)
        return ACK

    def _acked(self, conn: _Connection, todo: list[tuple[str, int, bytes]], p: _Pending) -> None:
        """Move each subject's scan start forward once nothing can make us repeat before it."""
        now = time.monotonic()
        last: dict[str, tuple[int, int]] = {}  # subject -> (max pilog seq, max stream seq)
        for i, (subject, seq, _) in enumerate(todo):
            top_seq, top_pos = last.get(subject, (0, 0))
            last[subject] = (max(top_seq, seq), max(top_pos, p.acks[i]))
        for subject, (top_seq, top_pos) in last.items():
            state = conn.subjects[subject]
            state.stored = {s for s in state.stored if s > top_seq}
            if state.stored:
                continue  # stored readings beyond this batch lie before top_pos: keep scanning
            state.acked.append((now, top_pos))
            while state.acked and state.acked[0][0] <= now - self._commit_lag_s:
                state.scan_from = max(state.scan_from, state.acked.popleft()[1])

    def _refused(
        self, conn: _Connection, todo: list[tuple[str, int, bytes]], p: _Pending
    ) -> Outcome:
        n, missing = len(todo), len(todo) - len(p.acks)
        if not p.errors:
            why = conn.failure or f"not acknowledged within {float(self.config.timeout):g}s"
            sent = counted(n, "message")
            return Outcome("retry", f"{missing} of {sent} to {self._where}: {why}")
        index, (code, what) = min(p.errors.items())
        subject = todo[index][0]
        stream = conn.subjects[subject].stream
        if code == ERR_MSG_TOO_LARGE:
            return Outcome(
                "rejected",
                f"stream {stream} refused seq {todo[index][1]}: {what}; raise the stream's "
                "max_msg_size (nats stream edit)",
                status=413,
            )
        if code == ERR_STORE_FAILED:
            return Outcome(
                "retry",
                f"stream {stream} refused {len(p.errors)} of {counted(n, 'message')}: {what} "
                "(discard = new); raise its max_msgs/max_bytes or set max_age; pilog keeps them "
                "and retries",
            )
        if code in (ERR_STREAM_NOT_FOUND, 503):
            return Outcome(
                "retry",
                f"no stream on {self._where} takes subject {subject} ({what}): create it as "
                "docs/sinks.md shows (nats stream add)",
            )
        return Outcome("retry", f"stream {stream} refused {len(p.errors)} of {n}: {what}")

    async def _connection(self) -> _Connection | Outcome:
        conn = self._conn
        if conn is not None and (conn.failed.is_set() or not conn.client.is_connected):
            log.warning(
                "nats sink %s: connection to %s lost (%s)",
                self.config.name,
                self._where,
                conn.failure or "closed",
            )
            await self._drop()
            conn = None
        if conn is not None:
            return conn
        made = await self._connect()
        if isinstance(made, Outcome):
            return made
        self._conn = made
        url = made.client.connected_url
        log.info("nats sink %s: connected to %s", self.config.name, url.netloc if url else "?")
        return made

    async def _connect(self) -> _Connection | Outcome:
        holder: list[_Connection] = []

        async def on_error(e: Exception) -> None:
            text = str(e)
            if holder and "permissions violation" in text.lower():
                holder[0].denied = text.removeprefix("nats: ").strip("'")
                holder[0].fail(holder[0].denied)

        async def on_disconnect() -> None:
            if holder:
                holder[0].fail("disconnected")

        client = Client()
        try:
            await client.connect(
                self._urls,
                name=f"pilog {self.context.device_id} {self.config.name}",
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                closed_cb=on_disconnect,
                allow_reconnect=False,  # the next send reconnects, after the uploader's backoff
                max_reconnect_attempts=1,  # each seed url tried at most twice per connect
                reconnect_time_wait=0,  # no pause between seed urls: the deadline bounds it all
                # Subjects are checked once: the template at startup, each value sanitised.
                skip_subject_validation=True,
                connect_timeout=max(1, round(float(self.config.timeout))),
                tls=self._tls,
                user=self._user,
                password=self._password,
                token=self._token,
            )
        except (OSError, TimeoutError, nats_errors.Error) as e:
            await _close_quietly(client)  # nats-py leaves the socket of a refused CONNECT open
            if isinstance(e, nats_errors.AuthorizationError) or "authorization violation" in (
                str(e).lower()
            ):
                return Outcome(
                    "unauthorized", f"{self._where} refused our credentials: {self._fix}"
                )
            return Outcome("retry", f"cannot connect to {self._where}: {_why(e)}")
        inbox = client.new_inbox()
        conn = _Connection(client, inbox)
        holder.append(conn)

        async def on_puback(msg: Msg) -> None:
            _on_puback(conn, inbox, msg)

        await client.subscribe(f"{inbox}.*", cb=on_puback)
        return conn

    async def _resume(self, conn: _Connection, subject: str) -> _Subject | Outcome:
        """What the stream holds of this device and epoch on `subject` (see the module doc)."""
        js = conn.client.jetstream(timeout=float(self.config.timeout))
        stream = self.options.stream
        if stream is None:
            try:
                stream = await js.find_stream_name_by_subject(subject)
            except NotFoundError:
                return _no_stream(self._where, subject)
        try:
            last = await js.get_last_msg(stream, subject)
        except NotFoundError as e:
            if e.err_code == ERR_STREAM_NOT_FOUND:
                return Outcome(
                    "retry",
                    f"stream {stream} does not exist on {self._where}: create it as "
                    "docs/sinks.md shows (nats stream add), or fix `stream`",
                )
            state = _Subject(stream, 0)  # nothing stored on this subject yet
            conn.subjects[subject] = state
            return state
        ours = self._our_seq((last.headers or {}).get(MSG_ID, ""))
        scan_from = (last.headers or {}).get(SCAN_FROM, "")
        if ours is None or not scan_from.isdigit():
            # Another epoch (the log was reset) or another publisher: nothing of ours after it.
            state = _Subject(stream, last.seq or 0)
        else:
            state = _Subject(stream, int(scan_from))
            await self._scan(js, state, subject, last.seq or 0)
        conn.subjects[subject] = state
        if state.stored:
            log.info(
                "nats sink %s: stream %s already holds %s on %s from seq %d",
                self.config.name,
                stream,
                counted(len(state.stored), "reading"),
                subject,
                min(state.stored),
            )
        return state

    async def _scan(self, js: JetStreamContext, state: _Subject, subject: str, last: int) -> None:
        """Collect our epoch's seqs stored on `subject` after `state.scan_from`, up to `last`.

        An ordered consumer with headers only: thousands of messages a second, and it starts
        over from the last one seen should the server skip any (a gap would mean duplicates)."""
        if last <= state.scan_from:
            return
        sub = await js.subscribe(
            subject,
            stream=state.stream,
            ordered_consumer=True,
            headers_only=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=state.scan_from + 1
            ),
        )
        try:
            position = state.scan_from
            while position < last:
                msg = await sub.next_msg(timeout=float(self.config.timeout))
                position = msg.metadata.sequence.stream
                seq = self._our_seq((msg.headers or {}).get(MSG_ID, ""))
                if seq is not None:
                    state.stored.add(seq)
        finally:
            await sub.unsubscribe()

    def _our_seq(self, msg_id: str) -> int | None:
        """The seq of an event id of this device and epoch, else None."""
        device, _, rest = msg_id.rpartition(":")
        device, _, epoch = device.rpartition(":")
        if device != self.context.device_id or epoch != self.context.epoch_hex:
            return None
        return int(rest) if rest.isdigit() else None

    async def _probe(self, deadline: float) -> Outcome:
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                conn = await self._connection()
                if isinstance(conn, Outcome):
                    return conn
                js = conn.client.jetstream(timeout=max(deadline - time.monotonic(), 0.1))
                await js.account_info()
                sample = self.options.subject.format(
                    device_id=self._device_id, sensor="*", sensor_type="*"
                )
                stream = self.options.stream
                if stream is None:
                    try:
                        stream = await js.find_stream_name_by_subject(sample)
                    except NotFoundError:
                        return _no_stream(self._where, sample)
                info = await js.stream_info(stream)
        except TimeoutError:
            return Outcome("retry", f"no answer from {self._where} in time")
        except NotFoundError:
            return Outcome("retry", f"stream {self.options.stream} does not exist on {self._where}")
        except ServiceUnavailableError:
            return Outcome("retry", f"JetStream is not enabled for this account on {self._where}")
        except (OSError, nats_errors.Error) as e:
            return Outcome("retry", f"{self._where}: {_why(e)}")
        finally:
            await self._drop()
        c = info.config
        return Outcome(
            "ack",
            f"stream {stream} on {self._where}: subjects {', '.join(c.subjects or [])}; "
            f"{counted(c.num_replicas or 1, 'replica')}, "
            f"duplicate window {c.duplicate_window or 0:g}s, "
            f"discard {getattr(c.discard, 'value', c.discard) or 'old'}, "
            f"{counted(info.state.messages, 'message')}",
        )

    async def _drop(self) -> None:
        """Forget the connection: the next send connects again and resumes."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close_quietly(conn.client)

    def _credentials(self) -> tuple[str | None, str | None, str | None]:
        """(user, password, token) from the options, the secret files or the environment."""
        o, name = self.options, self.config.name
        if o.username is not None:
            password = read_secret(
                o.password_file, secret_env_name(name, "password"), what="password"
            )
            return o.username, password, None
        token = read_secret(o.token_file, secret_env_name(name, "token"), what="token")
        return None, None, token

    def _credentials_fix(self) -> str:
        o, name = self.options, self.config.name
        if o.username is not None:
            where = o.password_file or "$" + secret_env_name(name, "password")
            return f"check username ({o.username!r}) and the password in {where}"
        if self._token is not None:
            return f"check the token in {o.token_file or '$' + secret_env_name(name, 'token')}"
        return "none are configured: set token_file, or username and password_file"


SINK = NatsSink


def _on_puback(conn: _Connection, inbox: str, msg: Msg) -> None:
    """One PubAck, JetStream error or no-responders status for a message in flight."""
    pending = conn.pending
    token = msg.subject[len(inbox) + 1 :]
    if pending is None or not token.isdigit():
        return
    index = int(token) - (conn.next_token - pending.n)
    if not 0 <= index < pending.n:
        return  # an answer to an earlier, abandoned batch
    if msg.headers and msg.headers.get("Status") == STATUS_NO_RESPONDERS:
        pending.answer(index, None, 503, "no responders")
        return
    try:
        answer = _decode_puback(msg.data)
    except msgspec.DecodeError:
        pending.answer(index, None, 0, f"not a PubAck: {msg.data[:80]!r}")
        return
    if answer.error is not None:
        error = answer.error
        pending.answer(index, None, error.err_code or error.code, error.description)
    else:
        pending.answer(index, answer.seq, 0, "")


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    """A PubAck, or the JetStream error in its place (other fields are ignored)."""

    seq: int = 0
    error: _ApiError | None = None


_decode_puback = msgspec.json.Decoder(_PubAck).decode


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of `waits` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def _close_quietly(client: Client) -> None:
    """Close a client and its socket, whatever state it is in, within CLOSE_S."""
    try:
        async with asyncio.timeout(CLOSE_S):
            await client.close()
    except (TimeoutError, OSError, nats_errors.Error):
        pass
    transport = getattr(client, "_transport", None)  # a CONNECT refused leaves it open
    if transport is not None:
        transport.close()


def _too_large(messages: list[tuple[str, int, bytes]], max_payload: int) -> Outcome | None:
    """`rejected` when a message exceeds the server's max_payload (the client refuses it)."""
    for _, seq, payload in messages:
        if len(payload) > max_payload:
            return Outcome(
                "rejected",
                f"seq {seq} is {len(payload)} bytes, over the server's max_payload "
                f"({max_payload}); raise max_payload in nats-server.conf",
                status=413,
            )
    return None


def _no_stream(where: str, subject: str) -> Outcome:
    return Outcome(
        "retry",
        f"no stream on {where} takes subject {subject}: create one as docs/sinks.md shows "
        "(nats stream add), or fix `subject`",
    )


def _check_subject(template: str) -> None:
    """Fail at startup on a template that cannot render, or renders an invalid subject."""
    try:
        sample = template.format(**dict.fromkeys(SUBJECT_FIELDS, "x"))
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"subject {template!r} does not render ({e!r}); it may use {{device_id}}, "
            "{sensor} and {sensor_type}"
        ) from e
    tokens = sample.split(".")
    if any(not t or t in ("*", ">") or re.search(r"\s", t) for t in tokens):
        raise ValueError(
            f"subject {template!r} must be dot-separated tokens, none empty, with no "
            "wildcard (* or >) and no whitespace, e.g. pilog.{device_id}"
        )


def _tls_context(name: str, options: NatsOptions) -> ssl.SSLContext | None:
    """Verifying context for tls:// urls (the system's CAs, or only `ca_bundle`'s)."""
    tls = any(u.startswith("tls://") for u in options.urls)
    if options.ca_bundle is None and not tls:
        return None
    cafile = str(options.ca_bundle) if options.ca_bundle is not None else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"sink {name}: cannot load ca_bundle {cafile}: {e}") from e


def _outcome(result: Outcome | None) -> Outcome:
    assert result is not None, "send and probe always return an Outcome"
    return result


def _why(e: BaseException) -> str:
    text = str(e).removeprefix("nats: ")
    return text or type(e).__name__
