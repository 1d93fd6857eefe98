"""The sink contract suite: one set of behaviour tests that every sink type must pass.

A sink's test module subclasses `SinkContract`, names its `sink_type`, and provides two
things: an `endpoint` fixture (a real server the test starts, put behind a
`pilog.testing.tcp_proxy.TcpProxy` so that it can be stopped, hung and started again while
it keeps what it stored) and `sink_table(endpoint)`, the `[[sink]]` keys that point the sink
at it. The suite then checks what `pilog.uploader.sink.SinkPlugin` promises (docs/sinks.md,
"Writing a sink"):

- `ack` means every reading of the batch is stored;
- a batch sent again after an ack leaves each reading stored once (`exactly_once`), or at
  least once with the same ids;
- a batch partly stored before a failure, sent again, ends with each reading stored once;
- an unreachable or hung endpoint is an Outcome (never an exception), by the sink's timeout;
- after the endpoint is back, the same sink instance delivers again;
- `close` returns within `stop_bound_s` while the endpoint is down or hangs, and `send`
  after `close` raises RuntimeError;
- no secret appears in an Outcome's detail, a log record or an exception;
- `probe` acknowledges a healthy endpoint and does not acknowledge an unreachable one;
- non-ASCII sensor and field names and edge floats come back exactly where the engine keeps
  them.

Every wait is bounded by `WAIT_S`, a bound on the test machine and never a measured result.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

from pilog.config import sink_from_table
from pilog.events import Event, Reading, Value
from pilog.uploader.sink import Outcome, SinkContext, SinkPlugin
from pilog.uploader.sinks import open_sink

WAIT_S = 60.0  # a bound for anything the test waits on, never a measured result
POLL_S = 0.02
DEVICE_ID = "contract-box"
EPOCH_HEX = "c0ffee00" * 4
BOOT_ID = bytes(range(16))
SENSOR = "contract-air"
SENSOR_TYPE = "contract"
# Event seq N has wall time T0_NS + N ms: an engine that keys points by time (InfluxDB,
# VictoriaMetrics keep milliseconds) maps a point back to its seq, hence its id. Whole
# seconds of an hour ago: recent enough for any retention.
T0_NS = (int(time.time()) - 3600) * 1_000_000_000
NS_PER_MS = 1_000_000
# Edge values, each to come back bit for bit: a sum that is not 0.3, a huge and a tiny
# magnitude, negative zero, and ints and strings as the engine keeps them.
EDGE_VALUES: dict[str, Value] = {
    "sum_c": 0.1 + 0.2,
    "huge": 1e300,
    "tiny": 5e-324,
    "neg_zero": -0.0,
    "count": 7,
}
NON_ASCII_SENSOR = "küche-温度"
NON_ASCII_FIELD = "température_°c"


@dataclass(frozen=True)
class StoredReading:
    """One reading as the engine holds it; what it does not keep is None or left out."""

    id: str
    sensor: str | None = None  # None: the engine does not keep the sensor's name as it was
    values: dict[str, Value] = field(default_factory=dict)  # the fields it keeps, as kept


class Endpoint(Protocol):
    """The real receiver a sink under test delivers to, as the contract drives it."""

    def stored(self) -> list[StoredReading]:
        """Every reading stored now, with multiplicity as the engine holds them (a receiver
        that de-duplicates by id lists each once; an MQTT subscriber lists what it got)."""
        ...

    def stop(self) -> None:
        """Make the endpoint unreachable (connections refused); it keeps what it stored."""
        ...

    def start(self) -> None:
        """Make it reachable again at the same address, after `stop` or `hang`."""
        ...

    def hang(self) -> None:
        """Accept connections and read, but answer nothing, until `start`."""
        ...


def event_id(seq: int) -> str:
    return f"{DEVICE_ID}:{EPOCH_HEX}:{seq}"


def seq_of_ms(ts_ms: int) -> int:
    """The seq of the contract's event at wall time `ts_ms` (milliseconds)."""
    return (ts_ms * NS_PER_MS - T0_NS) // NS_PER_MS


def reading_event(seq: int, values: dict[str, Value] | None = None, sensor: str = SENSOR) -> Event:
    """The contract's reading number `seq` (its `seq` field echoes the seq)."""
    body = Reading(sensor, SENSOR_TYPE, values if values is not None else {"seq": seq, "v": 0.5})
    return Event(seq, T0_NS + seq * NS_PER_MS, seq * NS_PER_MS, BOOT_ID, body)


def batch_of(first: int, n: int) -> list[Event]:
    return [reading_event(seq) for seq in range(first, first + n)]


def ids_of(batch: list[Event]) -> list[str]:
    return [event_id(e.seq) for e in batch]


def same_float(a: object, b: object) -> bool:
    """Equal, and for floats equal bit for bit (so -0.0 is not 0.0)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


MakeSink = Callable[..., SinkPlugin]


class SinkContract:
    """Subclass as `TestXxxContract(SinkContract)`; see the module doc for what to provide."""

    sink_type: ClassVar[str]  # as a [[sink]] names it: "http-json", "pkg.module:Class"
    exactly_once: ClassVar[bool] = True  # False for at-least-once sinks (MQTT QoS 1)
    timeout_s: ClassVar[float] = 2.0  # the sink's `timeout` in the tests
    # close() returns within this, even while a send waits on a hung endpoint.
    stop_bound_s: ClassVar[float] = 10.0
    margin_s: ClassVar[float] = 10.0  # what a send may take beyond `timeout_s` (thread start)
    keeps_sensor_names: ClassVar[bool] = True  # the engine stores the sensor name as sent
    kept_fields: ClassVar[tuple[str, ...] | None] = None  # None: every field of EDGE_VALUES

    # -- what a subclass provides

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> Iterator[Endpoint]:
        raise NotImplementedError("the sink's test module provides the endpoint fixture")

    def sink_table(self, endpoint: Any) -> dict[str, Any]:
        """The type's own keys that point a sink at `endpoint` (url, bucket, topic...)."""
        raise NotImplementedError

    def secret_table(self, secret: str, tmp_path: Path) -> dict[str, Any] | None:
        """Keys that give the sink `secret` (a token or password file); None: it takes none."""
        return None

    # -- fixtures the tests share

    @pytest.fixture
    def context(self, tmp_path: Path) -> SinkContext:
        return SinkContext(DEVICE_ID, EPOCH_HEX, tmp_path)

    @pytest.fixture
    def make_sink(self, endpoint: Endpoint, context: SinkContext) -> Iterator[MakeSink]:
        """`make_sink(**overrides)`: an open sink of `sink_type` at `endpoint`."""
        sinks: list[SinkPlugin] = []

        def make(**overrides: Any) -> SinkPlugin:
            table = {
                "name": "contract",
                "type": self.sink_type,
                "timeout": self.timeout_s,
                "linger_ms": 0,
                **self.sink_table(endpoint),
                **overrides,
            }
            sinks.append(open_sink(sink_from_table(table), context))
            return sinks[-1]

        yield make
        for sink in sinks:
            # Bounded: a close that hangs fails its own test, not every teardown after it.
            closing = threading.Thread(target=sink.close, daemon=True)
            closing.start()
            closing.join(self.stop_bound_s)

    # -- helpers

    def wait_stored(self, endpoint: Endpoint, ids: list[str]) -> list[StoredReading]:
        """What is stored, once every id of `ids` is (or at the deadline)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            stored = endpoint.stored()
            if set(ids) <= {r.id for r in stored} or time.monotonic() > deadline:
                return stored
            time.sleep(POLL_S)

    def send_bounded(self, sink: SinkPlugin, batch: list[Event]) -> Outcome:
        """`send` in a thread, which must end within the sink's timeout plus a margin."""
        result: list[Outcome | BaseException] = []

        def run() -> None:
            try:
                result.append(sink.send(batch))
            except BaseException as e:
                result.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(self.timeout_s + self.margin_s)
        assert not thread.is_alive(), f"send did not return within {self.timeout_s}s + margin"
        (outcome,) = result
        assert isinstance(outcome, Outcome), f"send raised instead of answering: {outcome!r}"
        return outcome

    def assert_stored_once_each(self, endpoint: Endpoint, ids: list[str]) -> None:
        stored = [r.id for r in self.wait_stored(endpoint, ids)]
        missing = [i for i in ids if i not in stored]
        assert not missing, f"acknowledged but not stored: {missing}"
        if self.exactly_once:
            twice = sorted({i for i in ids if stored.count(i) > 1})
            assert not twice, f"stored more than once: {twice}"

    # -- the contract

    def test_ack_means_every_reading_of_the_batch_is_stored(
        self, make_sink: MakeSink, endpoint: Endpoint
    ) -> None:
        batch = batch_of(0, 5)
        outcome = make_sink().send(batch)
        assert outcome.kind == "ack", outcome
        self.assert_stored_once_each(endpoint, ids_of(batch))
        assert {r.id for r in endpoint.stored()} == set(ids_of(batch))

    def test_a_batch_sent_again_after_its_ack_is_stored_once_or_with_the_same_ids(
        self, make_sink: MakeSink, endpoint: Endpoint
    ) -> None:
        sink = make_sink()
        batch = batch_of(0, 4)
        assert sink.send(batch).kind == "ack"
        assert sink.send(batch).kind == "ack"
        self.assert_stored_once_each(endpoint, ids_of(batch))
        assert {r.id for r in endpoint.stored()} == set(ids_of(batch))

    def test_a_batch_partly_stored_before_a_failure_ends_stored_once_each(
        self, make_sink: MakeSink, endpoint: Endpoint
    ) -> None:
        sink = make_sink()
        batch = batch_of(0, 6)
        assert sink.send(batch[:3]).kind == "ack"  # the part the receiver took
        endpoint.stop()
        assert self.send_bounded(sink, batch).kind == "retry"
        endpoint.start()
        assert self.send_bounded(sink, batch).kind == "ack"
        self.assert_stored_once_each(endpoint, ids_of(batch))

    def test_an_unreachable_endpoint_is_retry_by_the_timeout(
        self, make_sink: MakeSink, endpoint: Endpoint
    ) -> None:
        sink = make_sink()
        endpoint.stop()
        outcome = self.send_bounded(sink, batch_of(0, 2))
        assert outcome.kind == "retry", outcome
        assert outcome.detail, "a failed send says why"

    def test_a_hung_endpoint_is_retry_by_the_timeout(
        self, make_sink: MakeSink, endpoint: Endpoint
    ) -> None:
        sink = make_sink()
        assert sink.send(batch_of(0, 1)).kind == "ack"  # connected first: the hang is mid-use
        endpoint.hang()
        outcome = self.send_bounded(sink, batch_of(1, 2))
        assert outcome.kind == "retry", outcome

    def test_the_same_instance_delivers_again_once_the_endpoint_is_back(
        self, make_sink: MakeSink, endpoint: Endpoint
    ) -> None:
        sink = make_sink()
        assert sink.send(batch_of(0, 2)).kind == "ack"
        endpoint.stop()
        assert self.send_bounded(sink, batch_of(2, 2)).kind == "retry"
        endpoint.start()
        assert self.send_bounded(sink, batch_of(2, 2)).kind == "ack"
        endpoint.hang()
        assert self.send_bounded(sink, batch_of(4, 2)).kind == "retry"
        endpoint.start()
        assert self.send_bounded(sink, batch_of(4, 2)).kind == "ack"
        self.assert_stored_once_each(endpoint, ids_of(batch_of(0, 6)))

    @pytest.mark.parametrize("state", ["down", "hung"])
    def test_close_returns_in_bounded_time_while_the_endpoint_is_down_or_hangs(
        self, make_sink: MakeSink, endpoint: Endpoint, state: str
    ) -> None:
        sink = make_sink()
        assert sink.send(batch_of(0, 1)).kind == "ack"
        endpoint.stop() if state == "down" else endpoint.hang()
        # A send waiting on the endpoint while close is called, as at a shutdown.
        sending = threading.Thread(target=self._send_quietly, args=(sink,), daemon=True)
        sending.start()
        closing = threading.Thread(target=sink.close, daemon=True)
        closing.start()
        closing.join(self.stop_bound_s)
        assert not closing.is_alive(), f"close did not return within {self.stop_bound_s}s"
        sending.join(self.timeout_s + self.margin_s)
        assert not sending.is_alive(), "a send outlived close by more than the sink's timeout"

    def test_send_after_close_raises(self, make_sink: MakeSink) -> None:
        sink = make_sink()
        sink.close()
        with pytest.raises(RuntimeError):
            sink.send(batch_of(0, 1))

    def test_no_secret_in_outcomes_logs_or_exceptions(
        self,
        make_sink: MakeSink,
        endpoint: Endpoint,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        secret = "Zq9-contract-s3cret-Vx2"  # noqa: S105 - a made-up one, to look for
        table = self.secret_table(secret, tmp_path)
        if table is None:
            pytest.skip(f"{self.sink_type} takes no secret")
        caplog.set_level(logging.DEBUG)
        texts: list[str] = []
        sink = make_sink(**table)
        texts.append(sink.where())
        texts.append(sink.send(batch_of(0, 1)).detail)
        texts.append(sink.probe(time.monotonic() + self.timeout_s).detail)
        endpoint.stop()
        texts.append(self.send_bounded(sink, batch_of(1, 1)).detail)
        texts.append(sink.probe(time.monotonic() + self.timeout_s).detail)
        endpoint.start()
        sink.close()
        try:
            sink.send(batch_of(2, 1))
        except Exception as e:
            texts.append(f"{e!r} {e}")
        texts += [r.getMessage() for r in caplog.records]
        leaked = [t for t in texts if secret in t]
        assert not leaked, f"the secret appears in: {leaked}"

    def test_probe_acks_a_healthy_endpoint_and_not_an_unreachable_one(
        self, make_sink: MakeSink, endpoint: Endpoint
    ) -> None:
        sink = make_sink()
        healthy = sink.probe(time.monotonic() + self.timeout_s)
        assert healthy.kind == "ack", healthy
        assert endpoint.stored() == [], "a probe stores nothing"
        endpoint.stop()
        down = sink.probe(time.monotonic() + self.timeout_s)
        assert down.kind != "ack", down
        assert down.detail

    def test_non_ascii_names_and_edge_floats_come_back_exactly(
        self, make_sink: MakeSink, endpoint: Endpoint
    ) -> None:
        values: dict[str, Value] = {**EDGE_VALUES, NON_ASCII_FIELD: 21.5, "seq": 0}
        batch = [reading_event(0, values, sensor=NON_ASCII_SENSOR)]
        assert make_sink().send(batch).kind == "ack"
        (stored, *_) = [r for r in self.wait_stored(endpoint, ids_of(batch))]
        if self.keeps_sensor_names:
            assert stored.sensor == NON_ASCII_SENSOR
        kept = self.kept_fields if self.kept_fields is not None else tuple(values)
        for name in kept:
            assert name in stored.values, f"field {name!r} not kept: {stored.values}"
            got, sent = stored.values[name], values[name]
            assert same_float(got, sent), f"{name}: sent {sent!r}, stored {got!r}"

    def _send_quietly(self, sink: SinkPlugin) -> None:
        with contextlib.suppress(RuntimeError):  # closed under it: allowed
            sink.send(batch_of(1, 1))


__all__ = [
    "EDGE_VALUES",
    "NON_ASCII_FIELD",
    "NON_ASCII_SENSOR",
    "T0_NS",
    "Endpoint",
    "SinkContract",
    "StoredReading",
    "batch_of",
    "event_id",
    "reading_event",
    "same_float",
    "seq_of_ms",
]
