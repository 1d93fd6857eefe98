"""The uploader's fast paths equal the plain code they replace, and keep the cursor honest.

- http-json bodies from `SinkContext.wire_readings` are byte for byte the bodies of one
  `reading_object` dict per reading (`pilog.testing.encoders.http_json_body`);
- influx-line batches equal the field-by-field reference (`pilog.testing.encoders.line_batch`):
  body, line count, skipped readings and fields;
- `Uploader.handle` cuts a chunk into the same batches, with the same cursor, as the
  per-event loop it replaced;
- the receiver's msgspec checks never accept what its Python checks refuse;
- with a batch in flight in the sender thread, the cursor stays before it until it is acked.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import pytest
from helpers import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_uploader import DEVICE, make_config

from pilog.datadir import EventLog
from pilog.events import Event, Note, Reading, Value
from pilog.testing import encoders
from pilog.testing.receiver import Receiver, _decode, _Refusal, _to_dict, stall
from pilog.uploader.loop import Uploader, _stored_size
from pilog.uploader.sink import ACK, Outcome, SinkContext
from pilog.uploader.sinks import open_sink
from pilog.uploader.sinks.influx_line.sink import encode_batch

EPOCH = "0123456789abcdef0123456789abcdef"
YEAR_9000_NS = 221_845_392_000 * 10**9  # datetime stops at year 9999

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
values: st.SearchStrategy[Value] = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(1 << 64), max_value=1 << 64),
    st.booleans(),
    names,
)
readings = st.builds(
    Reading, names, names, st.dictionaries(names, values, max_size=5)
)  # fmt: skip


@st.composite
def batches(draw: st.DrawFn, min_size: int = 1) -> list[Event]:
    bodies = draw(st.lists(readings, min_size=min_size, max_size=30))
    first = draw(st.integers(min_value=0, max_value=1 << 40))
    stamps = draw(st.lists(st.integers(-(10**18), YEAR_9000_NS), min_size=len(bodies),
                           max_size=len(bodies)))  # fmt: skip
    return [
        Event(first + i, ts, 7, b"\x01" * 16, r)
        for i, (r, ts) in enumerate(zip(bodies, stamps, strict=True))
    ]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), device=names.filter(bool))
def test_http_json_body_from_wire_structs_equals_one_dict_per_reading(
    batch: list[Event], device: str
) -> None:
    context = SinkContext(device, EPOCH, Path("."))
    body = msgspec.json.encode(context.wire_readings(batch))
    assert body == encoders.http_json_body(context, batch)


def test_wire_timestamps_run_across_second_boundaries_and_before_1970() -> None:
    context = SinkContext(DEVICE, EPOCH, Path("."))
    stamps = [-1, -1_500, 0, 999_999_999, 1_000_000_000, 1_764_800_000_999_999_999]
    batch = [Event(i, ts, 0, b"", Reading("s", "t", {"v": 1.0})) for i, ts in enumerate(stamps)]
    wire = [w.timestamp for w in context.wire_readings(batch)]
    assert wire == [context.reading_object(e, e.body)["timestamp"] for e in batch]  # type: ignore[arg-type]
    assert wire[:3] == [
        "1969-12-31T23:59:59.999999Z",
        "1969-12-31T23:59:59.999998Z",
        "1970-01-01T00:00:00.000000Z",
    ]


def test_wire_readings_refuse_a_non_reading() -> None:
    context = SinkContext(DEVICE, EPOCH, Path("."))
    with pytest.raises(TypeError, match="seq 3"):
        context.wire_readings([Event(3, 0, 0, b"", Note("x"))])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), device=names)
def test_line_protocol_batch_equals_the_field_by_field_encoder(
    batch: list[Event], device: str
) -> None:
    fast, reference = encode_batch(batch, device), encoders.line_batch(batch, device)
    assert fast.body == reference.body
    assert (fast.lines, fast.skipped_seqs, fast.skipped_fields) == (
        reference.lines,
        reference.skipped_seqs,
        reference.skipped_fields,
    )


float_readings = st.builds(
    Reading,
    names,
    names,
    st.dictionaries(
        st.sampled_from(["t", "{x}", "a b", "", "k=v", 'q"', "}{"]) | names, st.floats(), max_size=4
    ),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(float_readings, min_size=1, max_size=20))
def test_line_protocol_all_float_readings_equal_the_field_by_field_encoder(
    bodies: list[Reading],
) -> None:
    batch = [Event(i, i, 0, b"", r) for i, r in enumerate(bodies)]
    fast, reference = encode_batch(batch, "dev"), encoders.line_batch(batch, "dev")
    assert (fast.body, fast.skipped_seqs, fast.skipped_fields) == (
        reference.body,
        reference.skipped_seqs,
        reference.skipped_fields,
    )


def test_line_protocol_fast_float_check_matches_isfinite() -> None:
    odd = [0.0, -0.0, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan]
    batch = [Event(0, 1, 0, b"", Reading("s", "t", {f"f{i}": v for i, v in enumerate(odd)}))]
    assert encode_batch(batch, "d").body == encoders.line_batch(batch, "d").body
    assert encode_batch(batch, "d").skipped_fields == 3


# -- batching ---------------------------------------------------------------------------


class Cuts(Uploader):
    """An uploader whose flush records the batch and the cursor instead of sending."""

    cuts: list[tuple[list[int], int]]

    def flush(self) -> None:
        self.cuts.append(([e.seq for e in self._pending], self._upto))
        self._pending = []
        self._pending_bytes = 0


def per_event_handle(u: Cuts, events: Sequence[Event]) -> None:
    """The loop `Uploader.handle` ran for every chunk before it cut by slicing."""
    for e in events:
        body = e.body
        if isinstance(body, Reading):
            if not u._pending:
                u._first_at = 0.0
            u._pending.append(e)
            u._pending_bytes += _stored_size(body)
        u._upto = e.seq + 1
        if len(u._pending) >= u.config.batch_max or u._pending_bytes >= u.config.batch_max_bytes:
            u.flush()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    events = EventLog(make_config(tmp_path, "http://127.0.0.1:9/"))
    yield events
    events.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kinds=st.lists(st.sampled_from("rrrrrn"), min_size=1, max_size=120),
    chunk=st.integers(1, 50),
    batch_max=st.integers(1, 20),
    max_bytes=st.integers(1, 2000),
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=120),
)
def test_chunked_batching_cuts_as_the_per_event_loop(
    log: EventLog,
    tmp_path: Path,
    kinds: list[str],
    chunk: int,
    batch_max: int,
    max_bytes: int,
    sizes: list[int],
) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9/", batch_max=batch_max,
                         batch_max_bytes=max_bytes)  # fmt: skip
    sink_config = config.sink[0]
    events = [
        Event(i, 0, 0, b"", Reading("s" * sizes[i % len(sizes)], "t", {"v": 1}))
        if k == "r"
        else Event(i, 0, 0, b"", Note("n"))
        for i, k in enumerate(kinds)
    ]
    fast, slow = (Cuts(sink_config, None, log, threading.Event()) for _ in range(2))  # type: ignore[arg-type]
    for u in (fast, slow):
        u.cuts = []
    for start in range(0, len(events), chunk):
        fast.handle(events[start : start + chunk])
        per_event_handle(slow, events[start : start + chunk])
    assert fast.cuts == slow.cuts
    assert ([e.seq for e in fast._pending], fast._upto) == (
        [e.seq for e in slow._pending],
        slow._upto,
    )
    assert fast._pending_bytes == slow._pending_bytes


# -- the receiver's checks ----------------------------------------------------------------


def good_object(seq: int = 5) -> dict[str, object]:
    return {
        "id": f"{DEVICE}:{EPOCH}:{seq}",
        "device_id": DEVICE,
        "seq": seq,
        "sensor": "air",
        "sensor_type": "bme280",
        "payload": {"t": 21.5, "n": 3, "s": "x", "b": True},
        "timestamp": "2026-12-04T11:00:00.123456Z",
    }


BREAKS: list[tuple[str, object]] = [
    ("id", ""), ("id", f"{DEVICE}:{EPOCH}:6"), ("id", f"{DEVICE}:xyz:5"), ("id", 5),
    ("device_id", ""), ("device_id", "other"), ("seq", -1), ("seq", 5.0), ("seq", True),
    ("seq", "5"), ("sensor", ""), ("sensor", None), ("sensor_type", ""),
    ("payload", []), ("payload", {"t": None}), ("payload", {"t": [1]}), ("payload", {"t": {}}),
    ("timestamp", "2026-12-04 11:00:00Z"), ("timestamp", "2026-02-30T11:00:00Z"),
    ("timestamp", "2026-12-04T11:00:00Z\n"), ("timestamp", "2026-12-04T25:00:00Z"),
    ("timestamp", "2026-12-04T11:00:00"), ("timestamp", "2026-12-04T11:00:00+25:00"),
    ("timestamp", ""), ("extra", 1), ("payload", None),
]  # fmt: skip


def outcome(body: bytes, python_checks: bool) -> object:
    try:
        return [_to_dict(obj) for obj in _decode(body, None, python_checks)]
    except _Refusal as refusal:
        return ("refused", refusal.status, str(refusal))


@pytest.mark.parametrize(("field", "value"), BREAKS)
def test_receiver_fast_checks_refuse_what_the_python_checks_refuse(
    field: str, value: object
) -> None:
    broken = good_object()
    broken[field] = value
    body = json.dumps([good_object(4), broken]).encode()
    assert outcome(body, python_checks=True)[0] == "refused"  # type: ignore[index]
    assert outcome(body, python_checks=False) == outcome(body, python_checks=True)


@pytest.mark.parametrize("field", sorted(good_object()))
def test_receiver_fast_checks_refuse_a_missing_field(field: str) -> None:
    broken = good_object()
    del broken[field]
    body = json.dumps([broken]).encode()
    assert outcome(body, python_checks=False) == outcome(body, python_checks=True)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(min_size=0))
def test_receiver_fast_checks_accept_pilog_bodies_as_the_python_checks_do(
    batch: list[Event],
) -> None:
    context = SinkContext(DEVICE, EPOCH, Path("."))
    body = msgspec.json.encode(context.wire_readings(batch))
    assert outcome(body, python_checks=False) == outcome(body, python_checks=True)


# -- one batch in flight ------------------------------------------------------------------


def test_cursor_stays_before_the_batch_in_flight_while_the_next_is_read(tmp_path: Path) -> None:
    with Receiver() as receiver:
        config = make_config(tmp_path, receiver.url, batch_max=10, linger_ms=10_000)
        events = EventLog(config)
        stop = threading.Event()
        sink_config = config.sink[0]
        context = SinkContext(DEVICE, events.epoch_hex, config.data_dir)
        uploader = Uploader(sink_config, open_sink(sink_config, context), events, stop)
        try:
            receiver.script(stall(30))  # the first batch hangs until the receiver closes
            for i in range(25):
                events.append(Reading("air", "t", {"i": i}))
            uploader.start()
            wait_until(lambda: receiver.in_flight == 1, "first batch in flight")
            # The consumer went on to the next batches; none may pass the cursor meanwhile.
            wait_until(lambda: uploader._pending or uploader._upto > 10, "read ahead")
            assert events.read_index(lambda i: i.cursors(), {}).get("sink:api") is None
            assert uploader.state.position == 0
        finally:
            stop.set()
            receiver.close()  # cuts the stall: the send fails, nothing is acknowledged
            assert uploader.join(10)
            cursor = events.read_index(lambda i: i.cursors(), {}).get("sink:api")
            events.close()
        assert cursor in (None, 0)


class EncodingFails:
    """A sink whose encoding ahead raises: a bug, never a reason to pass the readings."""

    def prepare(self, batch: Sequence[Event]) -> None:
        raise RuntimeError("cannot encode")

    def send(self, batch: Sequence[Event]) -> Outcome:
        return ACK

    def close(self) -> None:
        pass


def test_a_failed_encoding_ahead_leaves_the_cursor_before_the_batch(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9/", batch_max=5)
    events = EventLog(config)
    stop = threading.Event()
    uploader = Uploader(config.sink[0], EncodingFails(), events, stop)  # type: ignore[arg-type]
    try:
        for i in range(5):
            events.append(Reading("air", "t", {"i": i}))
        uploader.start()
        wait_until(lambda: uploader.state.state == "stuck", "stuck on the encoding")
        assert "cannot encode" in (uploader.state.last_error or "")
    finally:
        stop.set()
        assert uploader.join(10)
        cursor = events.read_index(lambda i: i.cursors(), {}).get("sink:api")
        events.close()
    assert cursor in (None, 0)
