"""The nats sink against a real 3-node JetStream cluster on 127.0.0.1, read back from the stream.

Every test has its own stream (and subjects) on one cluster per module; the tests that kill
nodes restart them before they end. Each test counts every reading in the stream exactly once.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pilog.events import Event, Reading, Value
from pilog.testing.nats import NatsCluster, missing
from pilog.uploader.sink import Outcome, SinkContext, secret_env_name

if missing() is None:
    from pilog.uploader.sinks.nats.sink import NatsOptions, NatsSink, subject_value

DEVICE_ID = "test-device"
EPOCH_HEX = "00112233445566778899aabbccddeeff"
OTHER_EPOCH_HEX = "ffeeddccbbaa99887766554433221100"
BOOT_ID = bytes(range(16))
SINK = "js"
USER, PASSWORD = "pilog", "s3cret-Pa55word"
WINDOW_S = 1.0  # the streams' duplicate window in the tests that outlast it
WAIT_S = 60.0  # a bound for waiting, never a measured result

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

_names = itertools.count()


@dataclass(frozen=True)
class Settings:
    """The generic `[[sink]]` keys the sink reads."""

    name: str = SINK
    timeout: float = 10.0
    cursor_commit_interval: float = 0.0


def reading_events(
    first: int, end: int, *, sensors: tuple[str, ...] = ("air", "soil")
) -> list[Event]:
    out = []
    for seq in range(first, end):
        values: dict[str, Value] = {"temperature_c": 20.0 + seq / 4, "count": seq}
        body = Reading(sensors[seq % len(sensors)], "bme280", values)
        out.append(Event(seq, 1_790_000_000_000_000_000 + seq, seq * 1000, BOOT_ID, body))
    return out


def ids(first: int, end: int, epoch: str = EPOCH_HEX) -> list[str]:
    return [f"{DEVICE_ID}:{epoch}:{seq}" for seq in range(first, end)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    c = NatsCluster.start(
        tmp_path_factory.mktemp("nats"),
        authorization=f'  user: {USER}\n  password: "{PASSWORD}"',
        connect_options={"user": USER, "password": PASSWORD},
    )
    yield c
    c.close()


@pytest.fixture
def stream(cluster: NatsCluster) -> str:
    """A fresh stream taking `<name>.>` (the name is also the subject prefix)."""
    name = f"T{next(_names)}"
    cluster.add_stream(name, [f"{name.lower()}.>"], duplicate_window=WINDOW_S)
    return name


OpenSink = Callable[..., "NatsSink"]


@pytest.fixture
def open_sink(
    cluster: NatsCluster, stream: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OpenSink]:
    """Makes sinks publishing to `<stream>.{device_id}` and closes them all at teardown."""
    monkeypatch.setenv(secret_env_name(SINK, "password"), PASSWORD)
    sinks: list[NatsSink] = []

    def make(
        *, epoch: str = EPOCH_HEX, settings: Settings | None = None, **options: Any
    ) -> NatsSink:
        options.setdefault("url", ",".join(cluster.urls))
        options.setdefault("subject", f"{stream.lower()}.{{device_id}}")
        options.setdefault("username", USER)
        context = SinkContext(DEVICE_ID, epoch, tmp_path)
        sink = NatsSink(settings or Settings(), NatsOptions(**options), context)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def deliver(sink: NatsSink, batch: list[Event], pause_s: float = 0.05) -> list[Outcome]:
    """Send until acknowledged, as the uploader does, `pause_s` between tries."""
    failures = []
    deadline = time.monotonic() + WAIT_S
    while (outcome := sink.send(batch)).kind != "ack":
        assert outcome.kind == "retry", outcome
        failures.append(outcome)
        assert time.monotonic() < deadline, f"not delivered within {WAIT_S}s: {failures[-3:]}"
        time.sleep(pause_s)
    return failures


# -- delivery ------------------------------------------------------------------------------


def test_each_reading_is_one_message_with_its_event_id(
    cluster: NatsCluster, stream: str, open_sink: OpenSink
) -> None:
    sink = open_sink()
    batch = reading_events(0, 500)
    assert sink.send(batch).kind == "ack"
    assert sink.send(reading_events(500, 700)).kind == "ack"

    stored = cluster.stored(stream)
    assert [h["Nats-Msg-Id"] for _, h, _ in stored] == ids(0, 700)
    assert {subject for subject, _, _ in stored} == {f"{stream.lower()}.{DEVICE_ID}"}
    _subject, _, data = stored[3]
    reading = batch[3].body
    assert isinstance(reading, Reading)
    assert json.loads(data) == SinkContext(DEVICE_ID, EPOCH_HEX, Path()).reading_object(
        batch[3], reading
    )


def test_a_resent_batch_within_the_window_is_stored_once(
    cluster: NatsCluster, stream: str, open_sink: OpenSink
) -> None:
    sink = open_sink()
    assert sink.send(reading_events(0, 100)).kind == "ack"
    assert sink.send(reading_events(0, 150)).kind == "ack"  # same connection: the stream dedups
    assert open_sink().send(reading_events(50, 200)).kind == "ack"  # a restart: resume skips
    assert cluster.stored_ids(stream) == ids(0, 200)


def test_a_resend_after_the_duplicate_window_skips_what_the_stream_holds(
    cluster: NatsCluster, stream: str, open_sink: OpenSink
) -> None:
    assert open_sink().send(reading_events(0, 300)).kind == "ack"
    time.sleep(WINDOW_S * 2)  # the stream forgets the ids: only the sink's resume stands
    # A restarted pilog re-sends its last batch and more (a crash before the cursor commit).
    assert open_sink().send(reading_events(200, 400)).kind == "ack"
    assert cluster.stored_ids(stream) == ids(0, 400)


def test_a_gap_in_a_pipelined_batch_is_filled_alone_after_the_window(
    cluster: NatsCluster, stream: str, open_sink: OpenSink
) -> None:
    """The stream holds 101..199 but not 100 (message 100 lost in a leader change, the rest
    stored): resending 100..199 after the window publishes 100 only. Then the last message on
    the subject is 100, behind 199: the next restart still skips 101..199."""
    batch = reading_events(100, 200)
    assert open_sink().send(batch[1:]).kind == "ack"
    time.sleep(WINDOW_S * 2)
    assert open_sink().send(batch).kind == "ack"
    assert cluster.stored_ids(stream) == ids(101, 200) + ids(100, 101)

    time.sleep(WINDOW_S * 2)
    assert open_sink().send(reading_events(100, 250)).kind == "ack"
    assert cluster.stored_ids(stream) == ids(101, 200) + ids(100, 101) + ids(200, 250)


def test_with_a_commit_interval_a_rolled_back_cursor_resends_nothing_stored(
    cluster: NatsCluster, stream: str, open_sink: OpenSink
) -> None:
    """cursor_commit_interval > 0: a crash may roll the cursor back several batches; the
    read-back reaches back that far, so the re-sent batches add nothing after the window."""
    slow_commit = Settings(cursor_commit_interval=60.0)
    sink = open_sink(settings=slow_commit)
    for first in range(0, 300, 100):
        assert sink.send(reading_events(first, first + 100)).kind == "ack"
    time.sleep(WINDOW_S * 2)
    assert open_sink(settings=slow_commit).send(reading_events(0, 350)).kind == "ack"
    assert cluster.stored_ids(stream) == ids(0, 350)


def test_ids_of_another_epoch_never_count_as_stored(
    cluster: NatsCluster, stream: str, open_sink: OpenSink
) -> None:
    assert open_sink(epoch=OTHER_EPOCH_HEX).send(reading_events(0, 100)).kind == "ack"
    assert open_sink().send(reading_events(0, 100)).kind == "ack"  # the log was reset
    assert cluster.stored_ids(stream) == ids(0, 100, OTHER_EPOCH_HEX) + ids(0, 100)


def test_subject_per_sensor_resumes_each_subject(
    cluster: NatsCluster, stream: str, open_sink: OpenSink
) -> None:
    template = f"{stream.lower()}.{{device_id}}.{{sensor}}"
    sensors = ("air", "soil.deep", "*")
    assert open_sink(subject=template).send(reading_events(0, 90, sensors=sensors)).kind == "ack"
    time.sleep(WINDOW_S * 2)
    sink = open_sink(subject=template)
    assert sink.send(reading_events(30, 150, sensors=sensors)).kind == "ack"

    stored = cluster.stored(stream)
    assert sorted(h["Nats-Msg-Id"] for _, h, _ in stored) == sorted(ids(0, 150))
    prefix = f"{stream.lower()}.{DEVICE_ID}"
    assert {s for s, _, _ in stored} == {f"{prefix}.air", f"{prefix}.soil_deep", f"{prefix}._"}
    assert subject_value("a.b c*>") == "a_b_c__"


# -- failures ------------------------------------------------------------------------------


def test_stream_leader_killed_mid_stream_every_reading_stored_once(
    cluster: NatsCluster, stream: str, open_sink: OpenSink
) -> None:
    sink = open_sink(settings=Settings(timeout=3.0))
    batches = [reading_events(i, i + 200) for i in range(0, 6000, 200)]
    acked = threading.Semaphore(0)
    failures: list[Outcome] = []

    def run() -> None:
        for batch in batches:
            # Retries come after the duplicate window: what a failed batch left in the stream
            # (a prefix, or a gap where the dead leader dropped a message) only the resume skips.
            failures.extend(deliver(sink, batch, pause_s=WINDOW_S * 1.5))
            acked.release()

    sender = threading.Thread(target=run)
    sender.start()
    for _ in range(5):
        assert acked.acquire(timeout=WAIT_S)
    leader = cluster.stream_leader(stream)
    cluster.kill(leader)  # SIGKILL while batches are in flight
    for _ in range(5):
        assert acked.acquire(timeout=WAIT_S)  # delivery goes on with two nodes
    cluster.restart(leader)
    sender.join(WAIT_S * 2)
    assert not sender.is_alive()
    assert failures, "the kill went unnoticed"
    stored = cluster.stored_ids(stream)
    assert sorted(stored, key=lambda i: int(i.rsplit(":", 1)[1])) == ids(0, 6000)


def test_an_outage_longer_than_the_window_then_resume_stores_each_once(
    cluster: NatsCluster, stream: str, open_sink: OpenSink
) -> None:
    """Every node killed while a large batch is half stored; back after the duplicate window;
    the same sink (and then a restarted one) completes it without a duplicate."""
    sink = open_sink(settings=Settings(timeout=2.0))
    assert sink.send(reading_events(0, 1000)).kind == "ack"
    big = reading_events(1000, 21000)
    failures: list[Outcome] = []
    sender = threading.Thread(target=lambda: failures.extend(deliver(sink, big)))
    sender.start()
    # Event-driven: wait until the stream holds part of the batch, then pull the plug.
    deadline = time.monotonic() + WAIT_S
    while cluster.message_count(stream) < 3000:
        assert time.monotonic() < deadline, "the big batch never reached the stream"
    for node in cluster.nodes:
        cluster.kill(node)
    time.sleep(WINDOW_S * 2)
    cluster.restart()
    sender.join(WAIT_S * 2)
    assert not sender.is_alive()
    assert failures, "the outage went unnoticed: the batch was stored before the kill"
    # Killed before its cursor commit, pilog re-sends the batch (its cursor is past 0..999).
    assert open_sink().send(big).kind == "ack"
    stored = cluster.stored_ids(stream)
    assert len(stored) == 21000
    assert sorted(stored) == sorted(ids(0, 21000))


def test_wrong_password_is_unauthorized_and_names_no_secret(
    open_sink: OpenSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(secret_env_name(SINK, "password"), "wrong")
    outcome = open_sink().send(reading_events(0, 10))
    assert outcome.kind == "unauthorized"
    assert "credentials" in outcome.detail
    assert "wrong" not in outcome.detail
    assert PASSWORD not in outcome.detail


def test_no_stream_for_the_subject_is_retry_naming_the_fix(open_sink: OpenSink) -> None:
    outcome = open_sink(subject="nowhere.{device_id}").send(reading_events(0, 10))
    assert outcome.kind == "retry"
    assert "no stream" in outcome.detail
    assert "nowhere.test-device" in outcome.detail
    assert "nats stream add" in outcome.detail


def test_a_full_stream_with_discard_new_is_retry_not_dead_letters(
    cluster: NatsCluster, open_sink: OpenSink
) -> None:
    name = f"F{next(_names)}"
    cluster.add_stream(name, [f"{name.lower()}.>"], max_msgs=50, discard="new")
    sink = open_sink(subject=f"{name.lower()}.{{device_id}}")
    outcome = sink.send(reading_events(0, 80))
    assert outcome.kind == "retry"
    assert f"stream {name}" in outcome.detail
    assert "max_msgs" in outcome.detail
    cluster.update_stream(name, max_msgs=1000)
    assert sink.send(reading_events(0, 80)).kind == "ack"
    assert cluster.stored_ids(name) == ids(0, 80)


def test_a_message_over_max_msg_size_is_rejected(cluster: NatsCluster, open_sink: OpenSink) -> None:
    name = f"M{next(_names)}"
    cluster.add_stream(name, [f"{name.lower()}.>"], max_msg_size=500)
    sink = open_sink(subject=f"{name.lower()}.{{device_id}}")
    big = reading_events(0, 1)[0]
    assert isinstance(big.body, Reading)
    big.body.values["note"] = "x" * 600
    outcome = sink.send([big])
    assert outcome.kind == "rejected"
    assert f"stream {name}" in outcome.detail
    assert "max_msg_size" in outcome.detail
    assert sink.send(reading_events(1, 5)).kind == "ack"


def test_probe_reads_the_stream_settings_and_writes_nothing(
    cluster: NatsCluster, stream: str, open_sink: OpenSink
) -> None:
    outcome = open_sink().probe(time.monotonic() + WAIT_S)
    assert outcome.kind == "ack", outcome
    assert f"stream {stream}" in outcome.detail
    assert "3 replicas" in outcome.detail
    assert cluster.stored_ids(stream) == []


def test_token_auth_on_a_single_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "t0ken-Secret"
    single = NatsCluster.start(
        tmp_path / "single",
        nodes=1,
        authorization=f'  token: "{token}"',
        connect_options={"token": token},
    )
    try:
        single.add_stream("TOK", ["tok.>"])
        (tmp_path / "tok").write_text(token + "\n")
        (tmp_path / "tok").chmod(0o600)
        context = SinkContext(DEVICE_ID, EPOCH_HEX, tmp_path)
        options = NatsOptions(url=single.urls[0], subject="tok.{device_id}")
        monkeypatch.setenv(secret_env_name(SINK, "token"), "wrong")
        denied = NatsSink(Settings(), options, context)
        good = NatsSink(
            Settings(),
            NatsOptions(url=single.urls[0], subject="tok.{device_id}", token_file=tmp_path / "tok"),
            context,
        )
        try:
            assert denied.send(reading_events(0, 5)).kind == "unauthorized"
            assert good.send(reading_events(0, 5)).kind == "ack"
        finally:
            denied.close()
            good.close()
        assert single.stored_ids("TOK") == ids(0, 5)
    finally:
        single.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://x"}, "nats://host"),
        ({"url": "nats://u:p@x"}, "credentials"),
        ({"url": " , "}, "at least one"),
        ({"subject": "pilog.*"}, "wildcard"),
        ({"subject": "pilog..{device_id}"}, "none empty"),
        ({"subject": "pilog.{nope}"}, "does not render"),
        ({"password_file": "/p"}, "needs username"),
    ],
)
def test_bad_options_say_what_to_fix(options: dict[str, Any], message: str) -> None:
    import msgspec

    from pilog.config import _dec_hook

    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(options, NatsOptions, dec_hook=_dec_hook)
