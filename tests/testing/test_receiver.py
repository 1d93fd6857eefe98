"""The shipped Receiver, seen from a plain httpx client: what it stores and how it answers."""

from __future__ import annotations

import contextlib
import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

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

WAIT_S = 30.0  # a bound for waiting on the receiver or a process, never a measured result
SHORT_S = 0.2  # the client's timeout against a stall that lasts WAIT_S


def reading(seq: int, device: str = "dev-1", epoch: str = "00ab") -> dict[str, Any]:
    return {
        "id": f"{device}:{epoch}:{seq}",
        "device_id": device,
        "seq": seq,
        "sensor": "air",
        "sensor_type": "bme280",
        "payload": {"temperature_c": 21.5, "ok": True, "n": seq, "unit": "x"},
        "timestamp": "2026-11-22T03:20:35.123456Z",
    }


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=WAIT_S, trust_env=False) as c:
        yield c


def post(client: httpx.Client, rx: Receiver, objects: object, **kw: Any) -> httpx.Response:
    return client.post(rx.url, content=json.dumps(objects).encode(), **kw)


# -- storing


def test_objects_are_stored_by_id_and_duplicates_counted(
    rx: Receiver, client: httpx.Client
) -> None:
    assert post(client, rx, [reading(1), reading(2)]).status_code == 200
    response = post(client, rx, [reading(2), reading(3), reading(3)])
    assert response.json() == {"accepted": 3, "new": 1}
    assert rx.ids() == {"dev-1:00ab:1", "dev-1:00ab:2", "dev-1:00ab:3"}
    assert list(rx.events) == ["dev-1:00ab:1", "dev-1:00ab:2", "dev-1:00ab:3"]
    assert rx.events["dev-1:00ab:2"] == reading(2)
    assert (rx.raw_count, rx.duplicates) == (5, 2)
    assert [(r.status, r.n_objects, r.stored) for r in rx.requests] == [(200, 2, 2), (200, 3, 1)]
    assert rx.validation_errors == []


def test_first_copy_of_an_id_is_the_one_kept(rx: Receiver, client: httpx.Client) -> None:
    changed = {**reading(1), "payload": {"temperature_c": 99.0}}
    post(client, rx, [reading(1)])
    post(client, rx, [changed])
    assert rx.events["dev-1:00ab:1"] == reading(1)


def test_gzip_body_is_decoded(rx: Receiver, client: httpx.Client) -> None:
    body = gzip.compress(json.dumps([reading(7)]).encode())
    response = client.post(rx.url, content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert rx.events == {"dev-1:00ab:7": reading(7)}
    assert rx.requests[0].headers["content-encoding"] == "gzip"


def test_contract_headers_and_path_are_recorded(rx: Receiver, client: httpx.Client) -> None:
    headers = {
        "Idempotency-Key": "dev-1:00ab:1-2",
        "Authorization": "Bearer t0ken",
        "User-Agent": "pilog/9.9",
        "X-Other": "not kept",
    }
    client.post(rx.base_url + "/v2/in", content=json.dumps([reading(1)]), headers=headers)
    request = rx.requests[0]
    assert request.path == "/v2/in"
    assert request.idempotency_key == "dev-1:00ab:1-2"
    assert request.headers == {
        "idempotency-key": "dev-1:00ab:1-2",
        "authorization": "Bearer t0ken",
        "user-agent": "pilog/9.9",
    }


def test_a_chunked_body_is_read(rx: Receiver, client: httpx.Client) -> None:
    body = json.dumps([reading(1), reading(2)]).encode()
    parts = iter([body[:10], body[10:]])
    response = client.post(rx.url, content=parts)  # an iterator: httpx sends it chunked
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200
    assert len(rx.ids()) == 2


def test_a_pooled_client_keeps_its_connection(rx: Receiver, client: httpx.Client) -> None:
    for seq in range(3):
        post(client, rx, [reading(seq)])
    assert len({r.peer for r in rx.requests}) == 1


def _with(**changes: object) -> list[dict[str, Any]]:
    return [reading(1), {**reading(2), **changes}]


CONTRACT_VIOLATIONS: dict[str, tuple[bytes, str]] = {
    "not json": (b"[{", "not JSON"),
    "not an array": (json.dumps(reading(1)).encode(), "must be a JSON array"),
    "not an object": (json.dumps([reading(1), 5]).encode(), "object 1: not an object"),
    "missing field": (
        json.dumps([{k: v for k, v in reading(1).items() if k != "sensor_type"}]).encode(),
        "missing ['sensor_type']",
    ),
    "extra field": (json.dumps(_with(unit="C")).encode(), "unexpected ['unit']"),
    "seq as string": (json.dumps(_with(seq="2")).encode(), "seq must be"),
    "seq as bool": (json.dumps(_with(seq=True, id="dev-1:00ab:True")).encode(), "seq must be"),
    "empty sensor": (json.dumps(_with(sensor="")).encode(), "sensor must be"),
    "id not device:epoch:seq": (json.dumps(_with(id="dev-1:00ab:3")).encode(), "id "),
    "epoch not hex": (json.dumps(_with(id="dev-1:zz:2")).encode(), "id "),
    "nested payload": (json.dumps(_with(payload={"a": {"b": 1}})).encode(), "payload"),
    "timestamp without zone": (
        json.dumps(_with(timestamp="2026-11-22T03:20:35")).encode(),
        "not RFC 3339",
    ),
    "timestamp impossible": (
        json.dumps(_with(timestamp="2026-13-40T03:20:35Z")).encode(),
        "not a valid date",
    ),
}


@pytest.mark.parametrize(("body", "reason"), CONTRACT_VIOLATIONS.values(), ids=CONTRACT_VIOLATIONS)
def test_a_contract_violation_is_refused_whole_and_recorded(
    rx: Receiver, client: httpx.Client, body: bytes, reason: str
) -> None:
    response = client.post(rx.url, content=body)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert len(rx.validation_errors) == 1
    assert reason in rx.validation_errors[0]
    assert rx.events == {}
    assert rx.raw_count == 0
    assert rx.requests[0].outcome == "invalid"


def test_a_body_that_is_not_gzip_is_a_validation_error(rx: Receiver, client: httpx.Client) -> None:
    body = json.dumps([reading(1)]).encode()
    response = client.post(rx.url, content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "not gzip" in rx.validation_errors[0]


# -- waiting


def test_wait_for_a_count_returns_once_another_thread_delivered(
    rx: Receiver, client: httpx.Client
) -> None:
    sender = threading.Thread(target=post, args=(client, rx, [reading(1), reading(2)]))
    sender.start()
    rx.wait_for(2)
    sender.join()
    assert len(rx.ids()) == 2


def test_wait_for_a_predicate_may_read_the_receiver(rx: Receiver, client: httpx.Client) -> None:
    rx.script(fail(503))
    sender = threading.Thread(target=post, args=(client, rx, [reading(1)]))
    sender.start()
    rx.wait_for(lambda r: any(q.status == 503 for q in r.requests))
    sender.join()


def test_wait_for_raises_with_the_stats_when_nothing_comes(rx: Receiver) -> None:
    with pytest.raises(TimeoutError, match="'unique': 0"):
        rx.wait_for(1, timeout=0)


# -- scripted answers


def test_the_script_is_used_one_per_request_then_ok(rx: Receiver, client: httpx.Client) -> None:
    rx.script(fail(500), fail(503), ok(202))
    statuses = [post(client, rx, [reading(1)]).status_code for _ in range(4)]
    assert statuses == [500, 503, 202, 200]
    assert [r.outcome for r in rx.requests] == ["fail", "fail", "ok", "ok"]
    assert (rx.raw_count, len(rx.ids())) == (2, 1)


def test_ok_204_sends_no_body_and_the_connection_stays_usable(
    rx: Receiver, client: httpx.Client
) -> None:
    rx.script(ok(204))
    assert post(client, rx, [reading(1)]).content == b""
    assert post(client, rx, [reading(2)]).json() == {"accepted": 1, "new": 1}
    assert len({r.peer for r in rx.requests}) == 1


def test_fail_answers_its_status_body_and_headers(rx: Receiver, client: httpx.Client) -> None:
    rx.script(fail(502, body="bad gateway", headers={"X-Why": "upstream"}))
    response = post(client, rx, [reading(1)])
    assert (response.status_code, response.text) == (502, "bad gateway")
    assert response.headers["X-Why"] == "upstream"
    assert rx.requests[0].n_objects == 1
    assert rx.events == {}


def test_fail_after_store_keeps_the_events_and_answers_the_failure(
    rx: Receiver, client: httpx.Client
) -> None:
    rx.script(fail(503, after_store=True))
    assert post(client, rx, [reading(1)]).status_code == 503
    assert rx.ids() == {"dev-1:00ab:1"}
    assert rx.requests[0].outcome == "ack_lost"


@pytest.mark.parametrize(("status", "seconds", "header"), [(429, 7, "7"), (503, 1.5, "1.5")])
def test_retry_after_sends_the_header(
    rx: Receiver, client: httpx.Client, status: int, seconds: float, header: str
) -> None:
    rx.script(retry_after(status, seconds))
    response = post(client, rx, [reading(1)])
    assert response.status_code == status
    assert response.headers["Retry-After"] == header


def test_retry_after_takes_an_http_date(rx: Receiver, client: httpx.Client) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    rx.script(retry_after(429, date))
    assert post(client, rx, [reading(1)]).headers["Retry-After"] == date


@pytest.mark.parametrize("status", [401, 403])
def test_unauthorized_answers_its_status(rx: Receiver, client: httpx.Client, status: int) -> None:
    rx.script(unauthorized(status))  # type: ignore[arg-type]
    assert post(client, rx, [reading(1)]).status_code == status


def test_always_answers_until_turned_off(rx: Receiver, client: httpx.Client) -> None:
    rx.always(fail(503))
    assert [post(client, rx, [reading(1)]).status_code for _ in range(3)] == [503] * 3
    rx.always(None)
    assert post(client, rx, [reading(1)]).status_code == 200


def test_too_large_refuses_requests_over_the_limit_until_cleared(
    rx: Receiver, client: httpx.Client
) -> None:
    rx.too_large(2)
    assert post(client, rx, [reading(1), reading(2), reading(3)]).status_code == 413
    assert post(client, rx, [reading(1), reading(2)]).status_code == 200
    assert post(client, rx, [reading(3), reading(4), reading(5)]).status_code == 413
    assert rx.ids() == {"dev-1:00ab:1", "dev-1:00ab:2"}
    assert [r.outcome for r in rx.requests] == ["too_large", "ok", "too_large"]
    rx.too_large(None)
    assert post(client, rx, [reading(3), reading(4), reading(5)]).status_code == 200


@pytest.mark.parametrize(
    "poison",
    ["dev-1:00ab:2", lambda obj: obj["payload"]["n"] == 2],
    ids=["by id", "by predicate"],
)
def test_poison_refuses_the_whole_request_naming_the_event(
    rx: Receiver, client: httpx.Client, poison: str | Callable[[dict[str, Any]], bool]
) -> None:
    rx.poison(poison)
    response = post(client, rx, [reading(1), reading(2), reading(3)])
    assert response.status_code == 400
    assert response.json()["id"] == "dev-1:00ab:2"
    assert "dev-1:00ab:2" in response.json()["error"]
    assert rx.events == {}  # a real API validates the whole request before storing any of it
    assert post(client, rx, [reading(2)]).status_code == 400  # persistent
    assert post(client, rx, [reading(1), reading(3)]).status_code == 200
    assert rx.ids() == {"dev-1:00ab:1", "dev-1:00ab:3"}
    assert rx.validation_errors == []  # a refusal, not a contract violation
    rx.clear_modes()
    assert post(client, rx, [reading(2)]).status_code == 200


def test_a_token_is_required_when_set(client: httpx.Client) -> None:
    with Receiver(token="secret") as rx:
        assert post(client, rx, [reading(1)]).status_code == 401
        wrong = {"Authorization": "Bearer other"}
        assert post(client, rx, [reading(1)], headers=wrong).status_code == 401
        right = {"Authorization": "Bearer secret"}
        assert post(client, rx, [reading(1)], headers=right).status_code == 200
        assert [r.outcome for r in rx.requests] == ["unauthorized", "unauthorized", "ok"]
        assert rx.ids() == {"dev-1:00ab:1"}


# -- broken answers


def test_reset_is_a_network_error_and_nothing_is_stored(rx: Receiver, client: httpx.Client) -> None:
    rx.script(reset())
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        post(client, rx, [reading(1)])
    assert rx.events == {}
    assert (rx.requests[0].status, rx.requests[0].outcome) == (0, "reset")
    assert post(client, rx, [reading(1)]).status_code == 200  # the client reconnects


def test_ack_lost_stores_the_events_but_the_client_sees_a_reset(
    rx: Receiver, client: httpx.Client
) -> None:
    rx.script(ack_lost())
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        post(client, rx, [reading(1)])
    assert rx.ids() == {"dev-1:00ab:1"}
    assert rx.requests[0].outcome == "ack_lost"


def test_garbage_is_a_protocol_error(rx: Receiver, client: httpx.Client) -> None:
    rx.script(garbage())
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, rx, [reading(1)])
    assert rx.events == {}
    assert post(client, rx, [reading(1)]).status_code == 200


def test_stall_outlasts_a_short_client_timeout(rx: Receiver) -> None:
    rx.script(stall(WAIT_S))
    with (
        httpx.Client(timeout=SHORT_S, trust_env=False) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        post(impatient, rx, [reading(1)])


def test_a_short_stall_then_answers_as_usual(rx: Receiver, client: httpx.Client) -> None:
    rx.script(stall(0.01))
    assert post(client, rx, [reading(1)]).status_code == 200
    assert rx.ids() == {"dev-1:00ab:1"}


def _outcomes(seed: int, n: int) -> list[str]:
    with Receiver() as rx, httpx.Client(timeout=WAIT_S, trust_env=False) as client:
        rx.random_failures(0.5, seed)
        for seq in range(n):
            with contextlib.suppress(httpx.TransportError):
                post(client, rx, [reading(seq)])
        return [r.outcome for r in rx.requests]


def test_random_failures_repeat_for_a_seed_and_include_a_lost_ack() -> None:
    outcomes = _outcomes(seed=7, n=60)
    assert outcomes == _outcomes(seed=7, n=60)
    assert set(outcomes) == {"ok", "fail", "reset", "ack_lost"}


def test_random_failures_with_retries_deliver_everything_despite_lost_acks(
    rx: Receiver, client: httpx.Client
) -> None:
    rx.random_failures(0.5, seed=3)
    for seq in range(30):
        while True:
            try:
                if post(client, rx, [reading(seq)]).status_code == 200:
                    break
            except httpx.TransportError:
                pass
    assert rx.ids() == {f"dev-1:00ab:{seq}" for seq in range(30)}
    assert rx.duplicates == rx.stats()["acks_lost"]
    assert rx.duplicates > 0


# -- lifetime and the other process


def test_close_stops_serving(client: httpx.Client) -> None:
    rx = Receiver()
    rx.close()
    rx.close()
    with pytest.raises(httpx.ConnectError):
        post(client, rx, [reading(1)])


def test_close_cuts_a_stall_short(client: httpx.Client) -> None:
    rx = Receiver()
    rx.script(stall(WAIT_S * 10))
    outcome: list[BaseException] = []

    def send() -> None:
        try:
            post(client, rx, [reading(1)])
        except httpx.TransportError as e:
            outcome.append(e)

    sender = threading.Thread(target=send)
    sender.start()
    rx.wait_for(lambda r: r.in_flight == 1)  # the request is in; the stall begins
    rx.close()
    sender.join(WAIT_S)
    assert not sender.is_alive()
    assert outcome
    assert rx.events == {}


def test_control_endpoints_answer_another_process(rx: Receiver, client: httpx.Client) -> None:
    post(client, rx, [reading(1), reading(2), reading(1)])
    stats = client.get(rx.base_url + "/_stats").json()
    assert stats == {
        "raw_count": 3,
        "unique": 2,
        "duplicates": 1,
        "requests": 1,
        "validation_errors": 0,
        "acks_lost": 0,
    }
    assert client.get(rx.base_url + "/_ids").json() == ["dev-1:00ab:1", "dev-1:00ab:2"]
    assert client.get(rx.base_url + "/_events").json() == [reading(1), reading(2)]
    assert client.get(rx.base_url + "/_nothing").status_code == 404
    assert len(rx.requests) == 1  # reading the state is not a request of the contract


def test_dump_appends_each_new_object_as_ndjson(tmp_path: Path, client: httpx.Client) -> None:
    dump = tmp_path / "received.ndjson"
    with Receiver(dump=dump) as rx:
        post(client, rx, [reading(1), reading(2)])
        post(client, rx, [reading(2), reading(3)])
        lines = dump.read_text().splitlines()  # written live, before close
    assert [json.loads(line) for line in lines] == [reading(1), reading(2), reading(3)]


def test_standalone_process_serves_until_terminated(tmp_path: Path) -> None:
    dump = tmp_path / "received.ndjson"
    argv = [sys.executable, "-m", "pilog.testing.receiver", "--port", "0", "--dump", str(dump)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/api/readings")
        base = url.removesuffix("/api/readings")
        with httpx.Client(timeout=WAIT_S, trust_env=False) as client:
            body = json.dumps([reading(1), reading(2), reading(2)])
            assert client.post(url, content=body).status_code == 200
            stats = client.get(base + "/_stats").json()
            ids = client.get(base + "/_ids").json()
        assert (stats["raw_count"], stats["unique"], stats["duplicates"]) == (3, 2, 1)
        assert ids == ["dev-1:00ab:1", "dev-1:00ab:2"]
    finally:
        process.terminate()
        out, err = process.communicate(timeout=WAIT_S)
    assert process.returncode == 0, err
    assert json.loads(out)["unique"] == 2
    assert [json.loads(line)["seq"] for line in dump.read_text().splitlines()] == [1, 2]


def test_standalone_process_fails_at_the_given_rate() -> None:
    argv = [sys.executable, "-m", "pilog.testing.receiver", "--port", "0", "--fail-rate", "1"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        with httpx.Client(timeout=WAIT_S, trust_env=False) as client:
            for _ in range(5):
                try:
                    response = client.post(url, content=json.dumps([reading(1)]))
                except httpx.TransportError:
                    continue
                assert response.status_code in (500, 503)
    finally:
        process.terminate()
        process.communicate(timeout=WAIT_S)


def test_behaviours_are_plain_values() -> None:
    assert fail(503) == Behaviour("fail", 503)
    assert reset() != ack_lost()
