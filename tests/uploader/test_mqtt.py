"""The mqtt sink against a real mosquitto on 127.0.0.1, read back by a real subscriber."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from mosquitto import (
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    OPENSSL,
    POLL_S,
    WAIT_S,
    Broker,
    Subscriber,
    free_port,
    missing,
    password_file,
    requires,
    start_broker,
    tls_files,
)

from pilog.config import Duration, SinkConfig, sink_from_table
from pilog.errors import ConfigError
from pilog.events import Event, Reading, Value
from pilog.uploader.sink import Outcome, SinkContext, readings, secret_env_name
from pilog.uploader.sinks import open_sink as open_any_sink
from pilog.uploader.sinks.http_json.sink import HttpJsonSink
from pilog.uploader.sinks.mqtt import sink as mqtt_sink
from pilog.uploader.sinks.mqtt.sink import MqttSink

DEVICE_ID = "test-device"
EPOCH_HEX = "00112233445566778899aabbccddeeff"
BOOT_ID = bytes(range(16))
SINK = "broker"
USER, PASSWORD = "pilog", "s3cret-Pa55word"

needs_mosquitto = requires(MOSQUITTO, "mosquitto")
needs_passwd = requires(MOSQUITTO_PASSWD, "mosquitto")
needs_openssl = requires(OPENSSL, "openssl")

OpenSink = Callable[..., MqttSink]


def reading_events(
    n: int, *, first_seq: int = 0, sensors: tuple[str, ...] = ("air", "soil")
) -> list[Event]:
    out = []
    for i in range(n):
        seq = first_seq + i
        values: dict[str, Value] = {"temperature_c": 20.0 + seq / 4, "count": seq, "ok": True}
        body = Reading(sensors[i % len(sensors)], "bme280", values)
        out.append(Event(seq, 1_790_000_000_000_000_000 + seq, seq * 1000, BOOT_ID, body))
    return out


def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S}s"
        time.sleep(POLL_S)


@pytest.fixture
def context(tmp_path: Path) -> SinkContext:
    return SinkContext(DEVICE_ID, EPOCH_HEX, tmp_path)


def mqtt_config(**table: Any) -> SinkConfig:
    """A `[[sink]]` of type mqtt with these keys (Path values as the file's strings)."""
    table = {k: str(v) if isinstance(v, Path) else v for k, v in table.items()}
    return sink_from_table({"type": "mqtt", **table})


def open_mqtt(config: SinkConfig, context: SinkContext) -> MqttSink:
    sink = open_any_sink(config, context)
    assert isinstance(sink, MqttSink)
    return sink


@pytest.fixture
def open_sink(context: SinkContext) -> Iterator[OpenSink]:
    """Makes MqttSinks named SINK (unless told) and closes them all at teardown."""
    sinks: list[MqttSink] = []

    def make(url: str, **config: Any) -> MqttSink:
        config.setdefault("timeout", Duration(WAIT_S))
        sink = open_mqtt(mqtt_config(name=config.pop("name", SINK), url=url, **config), context)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if reason := missing(MOSQUITTO, "mosquitto"):
        pytest.skip(reason)
    b = start_broker(tmp_path)
    yield b
    b.stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    s = Subscriber(broker.port)
    yield s
    s.close()


def http_json_objects(context: SinkContext, batch: list[Event]) -> list[dict[str, Any]]:
    table = {"name": "json", "type": "http-json", "url": "http://127.0.0.1:1/"}
    sink = open_any_sink(sink_from_table(table), context)
    assert isinstance(sink, HttpJsonSink)
    try:
        return sink.objects(batch)
    finally:
        sink.close()


def assert_no_secret(outcome: Outcome, caplog: pytest.LogCaptureFixture) -> None:
    assert PASSWORD not in outcome.detail
    assert not [r for r in caplog.records if PASSWORD in r.getMessage()]


# --- what arrives -------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_each_reading_arrives_once_with_topic_json_object_and_qos(
    qos: int,
    broker: Broker,
    subscriber: Subscriber,
    open_sink: OpenSink,
    context: SinkContext,
) -> None:
    sink = open_sink(broker.url, qos=qos)
    batch = reading_events(6)
    assert sink.send(batch).kind == "ack"
    # A marker sent after the batch was acknowledged: once it is in, a duplicate of the batch
    # would have been routed before it.
    marker = reading_events(1, first_seq=6)
    assert sink.send(marker).kind == "ack"

    got = subscriber.wait_for(7)
    assert len(subscriber.messages) == 7
    assert [m.topic for m in got] == [
        f"pilog/{DEVICE_ID}/{r.sensor}" for _, r in readings(batch + marker)
    ]
    assert [json.loads(m.payload) for m in got] == http_json_objects(context, batch + marker)
    assert {m.qos for m in got} == {qos}
    assert not any(m.retain for m in got)
    assert f"as pilog-{DEVICE_ID}-{SINK}" in broker.log_text()  # the default client id


def test_topic_values_cannot_add_levels_or_wildcards(
    broker: Broker, subscriber: Subscriber, open_sink: OpenSink, context: SinkContext
) -> None:
    sink = open_sink(broker.url, topic="pilog/{sensor_type}/{sensor}")
    sensors = ("a/b", "x+y", "#", "$SYS", "ok")
    batch = reading_events(len(sensors), sensors=sensors)
    assert sink.send(batch).kind == "ack"

    got = subscriber.wait_for(len(sensors))
    assert [m.topic for m in got] == [
        "pilog/bme280/a_b",
        "pilog/bme280/x_y",
        "pilog/bme280/_",
        "pilog/bme280/_SYS",
        "pilog/bme280/ok",
    ]
    # The payload keeps the sensor's real name.
    assert [json.loads(m.payload)["sensor"] for m in got] == list(sensors)


# --- outcomes -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "pilog-test.invalid"])  # refused; no such name
def test_broker_unreachable_is_retry(host: str, open_sink: OpenSink) -> None:
    sink = open_sink(f"mqtt://{host}:{free_port()}")
    outcome = sink.send(reading_events(1))
    assert outcome.kind == "retry"
    assert "cannot connect" in outcome.detail


@needs_mosquitto
@needs_passwd
@pytest.mark.parametrize("via", ["file", "env"])
def test_wrong_password_is_unauthorized_and_never_shown(
    via: str,
    tmp_path: Path,
    open_sink: OpenSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = start_broker(
        tmp_path, password_file=password_file(tmp_path, USER, "other-" + PASSWORD)
    )
    try:
        if via == "file":
            secret = tmp_path / "password"
            secret.write_text(PASSWORD + "\n")
            sink = open_sink(broker.url, username=USER, password_file=secret)
        else:
            monkeypatch.setenv(secret_env_name(SINK, "password"), PASSWORD)
            sink = open_sink(broker.url, username=USER)
        outcome = sink.send(reading_events(1))
        assert outcome.kind == "unauthorized"
        assert "refused" in outcome.detail
        assert_no_secret(outcome, caplog)
    finally:
        broker.stop()


@needs_mosquitto
@needs_passwd
def test_right_password_acks_and_anonymous_is_unauthorized(
    tmp_path: Path, open_sink: OpenSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = start_broker(tmp_path, password_file=password_file(tmp_path, USER, PASSWORD))
    try:
        secret = tmp_path / "password"
        secret.write_text(PASSWORD)
        outcome = open_sink(broker.url, username=USER, password_file=secret).send(reading_events(1))
        assert outcome.kind == "ack"
        assert_no_secret(outcome, caplog)
        anonymous = open_sink(broker.url, name="anonymous").send(reading_events(1))
        assert anonymous.kind == "unauthorized"
    finally:
        broker.stop()


def test_restarted_broker_is_reconnected_on_next_send(broker: Broker, open_sink: OpenSink) -> None:
    sink = open_sink(broker.url)
    assert sink.send(reading_events(2)).kind == "ack"
    broker.stop()
    broker.start()
    subscriber = Subscriber(broker.port)
    try:
        assert sink.send(reading_events(2, first_seq=2)).kind == "ack"
        got = subscriber.wait_for(2)
        assert [json.loads(m.payload)["seq"] for m in got] == [2, 3]
    finally:
        subscriber.close()


def test_broker_killed_while_waiting_for_acks_is_retry_without_waiting_out_the_timeout(
    broker: Broker, open_sink: OpenSink
) -> None:
    sink = open_sink(broker.url, timeout=Duration(3600))
    assert sink.send(reading_events(1)).kind == "ack"  # connected
    broker.pause()
    outcomes: list[Outcome] = []
    sender = threading.Thread(target=lambda: outcomes.append(sink.send(reading_events(10))))
    sender.start()
    # The publishes sit unread in the paused broker's socket: the sink is waiting for PUBACKs.
    until(lambda: broker.unread_bytes() > 0, "publishes at the paused broker")
    broker.kill()
    sender.join(WAIT_S)  # far below the sink's timeout: only the lost connection can end it
    assert not sender.is_alive()
    assert outcomes[0].kind == "retry"
    assert "lost" in outcomes[0].detail


def test_unacknowledged_at_the_deadline_is_retry_and_the_next_send_recovers(
    broker: Broker, open_sink: OpenSink
) -> None:
    sink = open_sink(broker.url)
    assert sink.send(reading_events(1)).kind == "ack"
    generous = sink.config
    sink.config = msgspec.structs.replace(generous, timeout=Duration(0.2))
    broker.pause()
    outcome = sink.send(reading_events(3, first_seq=1))
    assert outcome.kind == "retry"
    assert "not acknowledged" in outcome.detail
    broker.resume()
    sink.config = generous
    assert sink.send(reading_events(3, first_seq=1)).kind == "ack"


@needs_mosquitto
def test_message_over_the_brokers_limit_is_retry_as_the_broker_disconnects(
    tmp_path: Path, open_sink: OpenSink
) -> None:
    broker = start_broker(tmp_path, max_packet_size=1024)
    try:
        sink = open_sink(broker.url)
        big = Event(0, 1, 1, BOOT_ID, Reading("air", "text", {"line": "x" * 2048}))
        outcome = sink.send([big])
        assert outcome.kind == "retry"
        assert "lost" in outcome.detail
        assert sink.send(reading_events(1, first_seq=1)).kind == "ack"  # small ones still go
    finally:
        broker.stop()


@needs_mosquitto
@needs_openssl
# paho 2.2 does not close the socket when the TLS handshake fails (Client._ssl_wrap_socket);
# CPython closes it when the exception is gone, with a ResourceWarning.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
def test_tls_verifies_the_broker_against_ca_bundle(tmp_path: Path, open_sink: OpenSink) -> None:
    ca, cert, key = tls_files(tmp_path)
    broker = start_broker(tmp_path, tls=(cert, key))
    try:
        url = f"mqtts://127.0.0.1:{broker.port}"
        assert open_sink(url, ca_bundle=ca).send(reading_events(1)).kind == "ack"
        untrusted = open_sink(url, name="system-cas").send(reading_events(1))
        assert untrusted.kind == "retry"
        assert "certificate verify failed" in untrusted.detail
    finally:
        broker.stop()


@pytest.mark.parametrize("qos", [1, 2])
def test_more_messages_than_packet_ids_is_too_large(
    qos: int, open_sink: OpenSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt_sink, "MAX_PACKET_IDS", 3)  # not 65535: the check, not the size
    sink = open_sink(f"mqtt://127.0.0.1:{free_port()}", qos=qos)
    assert sink.send(reading_events(4)).kind == "too_large"


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"topic": "pilog/{device}/{sensor}"}, "does not render"),
        ({"topic": "pilog/+/{sensor}"}, "no wildcard"),
        ({"topic": "pilog/{sensor}/#"}, "no wildcard"),
        ({"url": "mqtt://user:pw@127.0.0.1"}, "credentials"),
        ({"ca_bundle": Path("/etc/ssl/certs/ca-certificates.crt")}, "mqtts://"),
        ({"url": "mqtts://127.0.0.1", "ca_bundle": Path("/nonexistent/ca.pem")}, "ca_bundle"),
    ],
)
def test_bad_settings_are_config_errors(
    options: dict[str, Any], message: str, context: SinkContext
) -> None:
    with pytest.raises(ConfigError, match=message):
        open_mqtt(mqtt_config(name=SINK, **{"url": "mqtt://127.0.0.1", **options}), context)


def test_password_without_username_is_a_config_error(
    context: SinkContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(secret_env_name(SINK, "password"), PASSWORD)
    with pytest.raises(ConfigError, match="needs a username") as e:
        open_mqtt(mqtt_config(name=SINK), context)
    assert PASSWORD not in str(e.value)


def test_without_paho_the_sink_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys, pathlib\n"
        "sys.modules['paho'] = None\n"  # what an environment without the extra looks like
        "from pilog.config import sink_from_table\n"
        "from pilog.uploader.sink import SinkContext\n"
        "from pilog.uploader.sinks import open_sink\n"
        "from pilog.errors import ConfigError\n"
        "try:\n"
        "    config = sink_from_table({'name': 'm', 'type': 'mqtt'})\n"
        "    open_sink(config, SinkContext('d', 'e', pathlib.Path('.')))\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip().startswith('the mqtt sink needs paho-mqtt (pilog\'s "mqtt" extra)')
    assert "pip install 'paho-mqtt>=2.0'" in out.stdout


def test_send_after_close_is_a_programming_error(open_sink: OpenSink) -> None:
    sink = open_sink("mqtt://127.0.0.1:1")
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        sink.send(reading_events(1))
