"""The http-json sink against the shipped Receiver: the wire contract, each answer's Outcome."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pilog import __version__
from pilog.config import sink_from_table
from pilog.errors import ConfigError
from pilog.events import Event, Reading
from pilog.testing import Receiver
from pilog.testing.receiver import (
    Behaviour,
    ack_lost,
    fail,
    garbage,
    ok,
    reset,
    retry_after,
    stall,
    unauthorized,
)
from pilog.uploader.http import encode_body
from pilog.uploader.sink import SinkContext
from pilog.uploader.sinks import open_sink
from pilog.uploader.sinks.http_json.sink import HttpJsonSink

DEVICE = "dev-1"
EPOCH = "00c0ffee"
TS_NS = 1_795_317_635_123_456_789  # 2026-11-22T03:20:35.123456789Z
TOKEN = "s3cr3t-t0ken-value"
STALL_S = 30.0  # longer than the sink's timeout; `Receiver.close` cuts it short
SHORT_TIMEOUT_S = 0.2


def event(seq: int, **values: float | int | str | bool) -> Event:
    body = Reading("air", "bme280", values or {"temperature_c": 20.0 + seq, "ok": True})
    return Event(seq, TS_NS + seq * 1_000_000_000, seq, b"\x01" * 16, body)


def batch(first: int, last: int) -> list[Event]:
    return [event(seq) for seq in range(first, last + 1)]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx honours proxy variables and the sink reads its token from the environment.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("PILOG_SINK_API_TOKEN", raising=False)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def context(tmp_path: Path) -> SinkContext:
    return SinkContext(DEVICE, EPOCH, tmp_path)


SinkFactory = Callable[..., HttpJsonSink]


@pytest.fixture
def make_sink(rx: Receiver, context: SinkContext) -> Iterator[SinkFactory]:
    sinks: list[HttpJsonSink] = []

    def make(**keys: object) -> HttpJsonSink:
        raw = {"type": "http-json", "name": "api", "url": rx.url, **keys}
        sink = open_sink(sink_from_table(raw), context)
        assert isinstance(sink, HttpJsonSink)
        sinks.append(sink)
        return sinks[-1]

    yield make
    for sink in sinks:
        sink.close()


# -- the body and headers of the contract


@pytest.mark.parametrize("use_gzip", [True, False], ids=["gzip", "plain"])
def test_body_is_the_contract_array(rx: Receiver, make_sink: SinkFactory, use_gzip: bool) -> None:
    sink = make_sink(gzip=use_gzip)
    events = [event(1), event(2, pm2_5_ugm3=3, label="x"), event(3)]
    assert sink.send(events).kind == "ack"
    assert rx.validation_errors == []
    assert rx.events[f"{DEVICE}:{EPOCH}:2"] == {
        "id": f"{DEVICE}:{EPOCH}:2",
        "device_id": DEVICE,
        "seq": 2,
        "sensor": "air",
        "sensor_type": "bme280",
        "payload": {"pm2_5_ugm3": 3, "label": "x"},
        "timestamp": "2026-11-22T03:20:37.123456Z",
    }
    assert list(rx.events) == [f"{DEVICE}:{EPOCH}:{seq}" for seq in (1, 2, 3)]
    encoding = rx.requests[0].headers.get("content-encoding")
    assert encoding == ("gzip" if use_gzip else None)


def test_timestamps_are_rfc3339_utc_of_the_events_wall_time(
    rx: Receiver, make_sink: SinkFactory
) -> None:
    make_sink().send(batch(1, 3))
    for obj in rx.events.values():
        stamp = dt.datetime.fromisoformat(obj["timestamp"])
        assert stamp.tzinfo == dt.UTC
        assert obj["timestamp"].endswith("Z")
        assert int(stamp.timestamp()) == (TS_NS + obj["seq"] * 1_000_000_000) // 10**9


def test_gzip_body_decompresses_to_the_plain_body(make_sink: SinkFactory) -> None:
    plain, zipped = make_sink(gzip=False), make_sink(gzip=True)
    events = batch(1, 5)
    assert plain.objects(events) == zipped.objects(events)
    body = json.dumps(plain.objects(events)).encode()
    compressed, headers = encode_body(body, True)
    assert headers == {"Content-Encoding": "gzip"}
    assert gzip.decompress(compressed) == body


def test_idempotency_key_and_user_agent(rx: Receiver, make_sink: SinkFactory) -> None:
    make_sink().send(batch(4, 9))
    request = rx.requests[0]
    assert request.idempotency_key == f"{DEVICE}:{EPOCH}:4-9"
    assert request.headers["user-agent"] == f"pilog/{__version__}"
    assert "authorization" not in request.headers


def test_the_same_batch_again_carries_the_same_key_and_is_deduplicated(
    rx: Receiver, make_sink: SinkFactory
) -> None:
    sink = make_sink()
    rx.script(ack_lost())
    first = sink.send(batch(1, 3))
    assert first.kind == "retry"
    assert sink.send(batch(1, 3)).kind == "ack"
    keys = [r.idempotency_key for r in rx.requests]
    assert keys == [f"{DEVICE}:{EPOCH}:1-3"] * 2
    assert (len(rx.ids()), rx.duplicates) == (3, 3)


def test_the_connection_is_kept_between_sends(rx: Receiver, make_sink: SinkFactory) -> None:
    sink = make_sink()
    for seq in range(1, 4):
        assert sink.send([event(seq)]).kind == "ack"
    assert len({r.peer for r in rx.requests}) == 1


# -- every answer's Outcome

OUTCOMES: dict[str, tuple[Behaviour, str, int, float | None]] = {
    "200": (ok(), "ack", 200, None),
    "202": (ok(202), "ack", 202, None),
    "204": (ok(204), "ack", 204, None),
    "500": (fail(500), "retry", 500, None),
    "503": (fail(503), "retry", 503, None),
    "408": (fail(408), "retry", 408, None),
    "429 Retry-After": (retry_after(429, 7), "retry", 429, 7.0),
    "503 Retry-After": (retry_after(503, 2), "retry", 503, 2.0),
    "429 Retry-After past date": (
        retry_after(429, "Wed, 21 Oct 2015 07:28:00 GMT"),
        "retry",
        429,
        0.0,
    ),
    "413": (fail(413), "too_large", 413, None),
    "401": (unauthorized(401), "unauthorized", 401, None),
    "403": (unauthorized(403), "unauthorized", 403, None),
    "400": (fail(400, body="bad reading"), "rejected", 400, None),
    "422": (fail(422), "rejected", 422, None),
    "reset": (reset(), "retry", 0, None),
    "ack lost": (ack_lost(), "retry", 0, None),
    "garbage": (garbage(), "retry", 0, None),
}


@pytest.mark.parametrize(
    ("behaviour", "kind", "status", "retry_after_s"), OUTCOMES.values(), ids=OUTCOMES
)
def test_each_answer_maps_to_its_outcome(
    rx: Receiver,
    make_sink: SinkFactory,
    behaviour: Behaviour,
    kind: str,
    status: int,
    retry_after_s: float | None,
) -> None:
    rx.script(behaviour)
    outcome = make_sink().send(batch(1, 2))
    assert (outcome.kind, outcome.status, outcome.retry_after_s) == (kind, status, retry_after_s)
    assert outcome.kind == "ack" or outcome.detail
    assert rx.validation_errors == []


def test_a_network_failure_detail_names_the_error(rx: Receiver, make_sink: SinkFactory) -> None:
    rx.script(garbage())
    outcome = make_sink().send(batch(1, 1))
    assert outcome.detail.startswith("network error: RemoteProtocolError")


def test_a_refusal_detail_quotes_the_body(rx: Receiver, make_sink: SinkFactory) -> None:
    rx.script(fail(400, body="seq   must\nbe positive"))
    assert make_sink().send(batch(1, 1)).detail == "HTTP 400: seq must be positive"


def test_a_stall_past_the_timeout_is_a_retry(rx: Receiver, make_sink: SinkFactory) -> None:
    rx.script(stall(STALL_S))
    outcome = make_sink(timeout=SHORT_TIMEOUT_S).send(batch(1, 1))
    assert outcome.kind == "retry"
    assert outcome.detail == "timed out (ReadTimeout)"


def test_too_large_then_halves_are_taken(rx: Receiver, make_sink: SinkFactory) -> None:
    sink = make_sink()
    rx.too_large(2)
    assert sink.send(batch(1, 4)).kind == "too_large"
    assert sink.send(batch(1, 2)).kind == "ack"
    assert sink.send(batch(3, 4)).kind == "ack"
    assert len(rx.ids()) == 4


def test_a_poisoned_event_rejects_its_batch_and_is_named(
    rx: Receiver, make_sink: SinkFactory
) -> None:
    sink = make_sink()
    rx.poison(f"{DEVICE}:{EPOCH}:3")
    outcome = sink.send(batch(1, 4))
    assert (outcome.kind, outcome.status) == ("rejected", 400)
    assert f"{DEVICE}:{EPOCH}:3" in outcome.detail
    assert rx.events == {}
    assert sink.send(batch(1, 2)).kind == "ack"
    assert sink.send([event(3)]).kind == "rejected"
    assert sink.send([event(4)]).kind == "ack"
    assert len(rx.ids()) == 3


def test_nothing_listening_is_a_retry(make_sink: SinkFactory) -> None:
    with Receiver() as gone:
        url = gone.url
    outcome = make_sink(url=url).send(batch(1, 1))
    assert outcome.kind == "retry"
    assert outcome.detail.startswith("network error: ConnectError")


# -- the bearer token


def _sends_the_token(make_sink: SinkFactory, **keys: object) -> None:
    with Receiver(token=TOKEN) as rx:
        assert make_sink(url=rx.url, **keys).send(batch(1, 1)).kind == "ack"
        assert rx.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_the_token_comes_from_token_file(tmp_path: Path, make_sink: SinkFactory) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    _sends_the_token(make_sink, token_file=str(token_file))


def test_the_token_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, make_sink: SinkFactory
) -> None:
    monkeypatch.setenv("PILOG_SINK_API_TOKEN", TOKEN)
    _sends_the_token(make_sink)


def test_the_token_file_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_sink: SinkFactory
) -> None:
    monkeypatch.setenv("PILOG_SINK_API_TOKEN", "from-env")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    _sends_the_token(make_sink, token_file=str(token_file))


def test_a_missing_token_is_unauthorized(make_sink: SinkFactory) -> None:
    with Receiver(token=TOKEN) as rx:
        outcome = make_sink(url=rx.url).send(batch(1, 1))
    assert (outcome.kind, outcome.status) == ("unauthorized", 401)


def test_an_unreadable_token_file_is_a_config_error_naming_it(
    tmp_path: Path, make_sink: SinkFactory
) -> None:
    missing = tmp_path / "no-token"
    with pytest.raises(ConfigError, match="no-token"):
        make_sink(token_file=str(missing))


@pytest.mark.parametrize(
    "behaviour",
    [
        fail(400, echo_headers=True),
        fail(500, echo_headers=True),
        fail(401, echo_headers=True),
        fail(403, body=f"token Bearer {TOKEN} is revoked"),
    ],
    ids=["400 echo", "500 echo", "401 echo", "403 names it"],
)
def test_the_token_appears_in_no_detail(
    tmp_path: Path, make_sink: SinkFactory, rx: Receiver, behaviour: Behaviour
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    rx.script(behaviour)
    outcome = make_sink(token_file=str(token_file)).send(batch(1, 1))
    assert outcome.kind != "ack"
    assert rx.requests[0].headers["authorization"] == f"Bearer {TOKEN}"  # it was sent
    assert TOKEN not in outcome.detail


# -- TLS settings


def test_a_missing_ca_bundle_is_a_config_error_naming_it(
    tmp_path: Path, make_sink: SinkFactory
) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match=r"ca\.pem"):
        make_sink(url="https://127.0.0.1:1/api/readings", ca_bundle=str(missing))


def test_a_token_with_a_line_break_is_a_config_error_that_does_not_quote_it(
    tmp_path: Path, make_sink: SinkFactory
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t\nsecond-line")
    with pytest.raises(ConfigError, match="line break") as info:
        make_sink(token_file=str(token_file))
    assert "s3cr3t" not in str(info.value)
