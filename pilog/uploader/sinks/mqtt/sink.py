"""`mqtt`: one MQTT 3.1.1 message per reading, through paho-mqtt 2.x (the `mqtt` extra).

Wire format: each reading is one PUBLISH, never retained, at the configured QoS, to the topic
rendered from `topic` (default `pilog/{device_id}/{sensor}`; `{sensor_type}` may be used too),
with the JSON object of the `http-json` contract as payload:
`{"id", "device_id", "seq", "sensor", "sensor_type", "payload", "timestamp"}`. In each value
put into the topic, `/`, `+`, `#` and NUL become `_`, and so does a leading `$`: a sensor named
`a/b` must not add a topic level, one named `#` must not make a wildcard (a broker refuses to
publish to one), and `$` topics belong to the broker.

Ack semantics: a send is `ack` when every message of the batch is acknowledged within
`timeout`, connecting included: PUBACK at QoS 1, PUBCOMP at QoS 2. At QoS 0 a message counts
once it is written to the socket: at most once; a broker that dies after that loses it, and the
cursor has already passed it. Otherwise:
- cannot connect (refused, DNS, TLS verification, no CONNACK in time) → `retry`;
- CONNACK "bad user name or password" or "not authorized" → `unauthorized`; other refusals
  (server unavailable, client id rejected) → `retry`;
- connection lost, or messages still unacknowledged at the deadline → `retry`. The uploader
  then publishes the whole batch again, so a subscriber may see a reading twice (same `id`).
- more than 65535 messages at QoS 1 or 2: more than there are packet ids → `too_large`;
- a message larger than the broker accepts (mosquitto's `max_packet_size`): MQTT 3.1.1 has no
  way to say so; mosquitto closes the connection, which is `retry` with "connection lost",
  again on every attempt until the broker's limit is raised. 3.1.1 has no negative PUBACK
  either: a publish that the broker's ACL denies is acknowledged and dropped there.

Session: `clean_session=True`, and a new client after any failure. The log is the retry queue:
a failed batch is sent again in full, so re-sending an abandoned batch's in-flight messages
from a persistent session would only add duplicates; worse, at QoS 2 a new client's message ids
restart at 1, and a broker still holding an old session's id would swallow the new PUBLISH as a
re-send. paho's network thread does not reconnect on its own either: the next `send` does, so
reconnecting follows the uploader's backoff.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import msgspec

from pilog.config import SinkConfig
from pilog.counts import counted
from pilog.errors import ConfigError
from pilog.events import Event, Reading
from pilog.uploader.probe import PROBE_CLIENT_SUFFIX, ProbeFailed, probe_steps, reach
from pilog.uploader.sink import ACK, Outcome, SinkContext, read_secret, readings, secret_env_name

try:
    from paho.mqtt.client import (
        Client,
        ConnectFlags,
        DisconnectFlags,
        MQTTMessageInfo,
        error_string,
    )
    from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    HAVE_PAHO = True
except ImportError:  # the extra is not installed; constructing the sink says how to get it
    HAVE_PAHO = False

log = logging.getLogger("pilog.uploader")

KEEPALIVE_S = 60  # paho's default; the broker drops a client silent for 1.5 times this
# Packet ids are 16 bits and 0 is not one: paho refuses a publish whose id is still in flight,
# so a QoS 1/2 batch with more messages than ids is `too_large` and the uploader sends halves.
MAX_PACKET_IDS = 65535
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# CONNACK refusals that a retry cannot fix: the credentials (or their rights) are wrong.
REFUSED_CREDENTIALS = frozenset({"Bad user name or password", "Not authorized"})
TOPIC_FIELDS = ("device_id", "sensor", "sensor_type")

_encode = msgspec.json.Encoder().encode
_UNSAFE_IN_TOPIC = str.maketrans(dict.fromkeys("/+#\0", "_"))


class MqttOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`mqtt`'s keys: the broker, the topic template, QoS and credentials."""

    url: str = "mqtt://127.0.0.1:1883"  # mqtts:// for TLS
    topic: str = "pilog/{device_id}/{sensor}"  # also {sensor_type}
    qos: Literal[0, 1, 2] = 1  # 0 is at most once
    username: str | None = None  # with password_file
    password_file: Path | None = None  # else $PILOG_SINK_<NAME>_PASSWORD
    ca_bundle: Path | None = None  # mqtts://: PEM file to verify the broker with
    client_id: str | None = None  # default: pilog-<device_id>-<sink name>

    def __post_init__(self) -> None:
        if not self.url.startswith(("mqtt://", "mqtts://")):
            raise ValueError("url must start with mqtt:// or mqtts://")


def topic_value(value: str) -> str:
    """`value` made safe as (part of) one topic level: no separators, wildcards or `$` first."""
    value = value.translate(_UNSAFE_IN_TOPIC)
    return "_" + value[1:] if value.startswith("$") else value


class MqttSink:
    """One MQTT 3.1.1 message per reading, at least once (paho-mqtt; see the module doc)."""

    Options: ClassVar[type[msgspec.Struct]] = MqttOptions
    extra: ClassVar[str | None] = "mqtt"

    def __init__(self, config: SinkConfig, options: MqttOptions, context: SinkContext) -> None:
        if not HAVE_PAHO:
            raise ModuleNotFoundError("No module named 'paho'", name="paho")
        self.config = config
        self.options = options
        self.context = context
        self._host, self._port, tls = _parse_url(config.name, options)
        self._where = f"{self._host}:{self._port}"
        self._ssl_context = _tls_context(config.name, options) if tls else None
        if options.ca_bundle is not None and not tls:
            raise ConfigError(f"sink {config.name}: ca_bundle needs an mqtts:// url")
        self._password = read_secret(
            options.password_file, secret_env_name(config.name, "password"), what="password"
        )
        if self._password is not None and options.username is None:
            raise ConfigError(f"sink {config.name}: a password needs a username (MQTT 3.1.1)")
        self._client_id = options.client_id or f"pilog-{context.device_id}-{config.name}"
        self._device_id = topic_value(context.device_id)
        _check_topic(config.name, options)
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._closed = False

    def where(self) -> str:
        return f"{'mqtts' if self._ssl_context else 'mqtt'}://{self._where}"

    def topic(self, reading: Reading) -> str:
        return self.options.topic.format(
            device_id=self._device_id,
            sensor=topic_value(reading.sensor),
            sensor_type=topic_value(reading.sensor_type),
        )

    def messages(self, batch: Sequence[Event]) -> list[tuple[str, bytes]]:
        """(topic, payload) per reading; the payload is the `http-json` object."""
        return [
            (self.topic(r), _encode(self.context.reading_object(e, r))) for e, r in readings(batch)
        ]

    def send(self, batch: Sequence[Event]) -> Outcome:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"mqtt sink {self.config.name} is closed")
            return self._send(batch)

    def probe(self, deadline: float) -> Outcome:
        """CONNECT, then DISCONNECT, with the sink's credentials and TLS, as client
        `<client_id>-check` (a running pilog's session is left alone); publishes nothing."""
        return probe_steps(lambda: self._probe(deadline), deadline, self.options.ca_bundle)

    def _probe(self, deadline: float) -> str:
        problem = url_problem(self.options)
        if problem is not None:
            raise ProbeFailed(problem)
        reach(self.options.url, deadline)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"mqtt sink {self.config.name} is closed")
            self._drop()  # a send's connection, if any: the next send reconnects
            conn = self._connect(deadline, self._client_id + PROBE_CLIENT_SUFFIX)
            if isinstance(conn, Outcome):
                outcome = conn
            else:
                self._drop()
                return f"{self._where} accepted the connection; CONNECT accepted, then DISCONNECT"
        if outcome.kind != "unauthorized":
            raise ProbeFailed(outcome.detail, outcome.kind)
        # mosquitto 2 answers "Not authorized" to a wrong password as well as to no user.
        if self.options.username is None:
            fix = "no username is configured: set username and password_file (or allow "
            fix += "anonymous clients in the broker)"
        else:
            where = self.options.password_file or "$" + secret_env_name(
                self.config.name, "password"
            )
            fix = f"check username ({self.options.username!r}) and the password in {where}"
        raise ProbeFailed(f"{outcome.detail}: {fix}", "unauthorized")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()

    def _send(self, batch: Sequence[Event]) -> Outcome:
        deadline = time.monotonic() + self.config.timeout
        messages = self.messages(batch)
        if self.options.qos > 0 and len(messages) > MAX_PACKET_IDS:
            return Outcome(
                "too_large", f"{counted(len(messages), 'message')}; at most {MAX_PACKET_IDS}"
            )
        conn = self._conn
        if conn is not None and conn.lost is not None:
            log.warning(
                "mqtt sink %s: connection to %s lost (%s)", self.config.name, self._where, conn.lost
            )
            self._drop()
            conn = None
        if conn is None:
            conn_or_failure = self._connect(deadline)
            if isinstance(conn_or_failure, Outcome):
                return conn_or_failure
            conn = conn_or_failure

        # Count callbacks rather than poll each MQTTMessageInfo: paho calls on_publish before
        # it marks the info published, and at QoS 0 it may do so inside publish() itself.
        # Every message of an earlier send was acknowledged (or its client dropped), so every
        # on_publish from here on belongs to this batch.
        base = conn.published
        for topic, payload in messages:
            info: MQTTMessageInfo = conn.client.publish(topic, payload, qos=self.options.qos)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # Not connected (or the write failed): the only way publish() fails here, as
                # the queue is unbounded, ids cannot run out, and topics were made valid.
                why = conn.lost or error_string(info.rc)
                self._drop()
                return Outcome(
                    "retry", f"connection to {self._where} lost while publishing ({why})"
                )
        n = len(messages)
        conn.wait_for(lambda: conn.published - base >= n or conn.lost is not None, deadline)
        missing = n - (conn.published - base)
        if missing <= 0:
            return ACK
        lost = conn.lost
        self._drop()
        if lost is not None:
            return Outcome(
                "retry",
                f"connection to {self._where} lost ({lost}); "
                f"{missing} of {counted(n, 'message')} unacknowledged",
            )
        return Outcome(
            "retry",
            f"{missing} of {counted(n, 'message')} not acknowledged by {self._where} "
            f"within {self.config.timeout:g}s",
        )

    def _connect(self, deadline: float, client_id: str | None = None) -> _Connection | Outcome:
        """A connected client, or why there is none (the failed client is already gone)."""
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or self._client_id,
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        if self.options.username is not None:
            client.username_pw_set(self.options.username, self._password)
        if self._ssl_context is not None:
            client.tls_set_context(self._ssl_context)
        client.connect_timeout = max(deadline - time.monotonic(), 0.001)
        conn = _Connection(client)
        try:
            # Blocking: TCP connect, TLS handshake and CONNECT, each bounded by connect_timeout
            # (name resolution is not; the resolver has its own timeout).
            client.connect(self._host, self._port, keepalive=KEEPALIVE_S)
        except OSError as e:  # refused, unreachable, DNS, timeout, TLS verification
            conn.detach()
            return Outcome("retry", f"cannot connect to {self._where}: {_os_error(e)}")
        client.loop_start()
        self._conn = conn
        conn.wait_for(lambda: conn.connack is not None or conn.lost is not None, deadline)
        connack, lost = conn.connack, conn.lost
        if connack is not None and not connack.is_failure:
            log.info("mqtt sink %s: connected to %s", self.config.name, self._where)
            return conn
        self._drop()
        if connack is not None:
            detail = f"{self._where} refused the connection: {connack}"
            if str(connack) in REFUSED_CREDENTIALS:
                return Outcome("unauthorized", detail)
            return Outcome("retry", detail)
        if lost is not None:
            return Outcome("retry", f"connection to {self._where} lost before CONNACK ({lost})")
        return Outcome("retry", f"no CONNACK from {self._where} within {self.config.timeout:g}s")

    def _drop(self) -> None:
        """Forget the client and stop its network thread; its queued messages go with it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.client.disconnect()  # a DISCONNECT if still connected; ends the loop either way
            conn.client.loop_stop()
            conn.detach()


class _Connection:
    """One paho client and what its callbacks (on paho's network thread) have seen."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.changed = threading.Condition()
        self.connack: ReasonCode | None = None
        self.lost: str | None = None  # why the connection ended, once it has
        self.published = 0  # messages acknowledged (QoS 1, 2) or written (QoS 0) so far
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    def detach(self) -> None:
        """Unhook the callbacks: no client↔connection cycle, so both are freed (sockets too)."""
        self.client.on_connect = None
        self.client.on_disconnect = None
        self.client.on_publish = None

    def wait_for(self, predicate: Callable[[], bool], deadline: float) -> None:
        with self.changed:
            self.changed.wait_for(predicate, max(deadline - time.monotonic(), 0.0))

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self.changed:
            self.connack = reason
            self.changed.notify_all()

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # 3.1.1 has no DISCONNECT from the broker: paho only knows the socket closed.
        why = (
            "closed by the broker or the network"
            if str(reason) == "Unspecified error"
            else str(reason)
        )
        with self.changed:
            self.lost = why
            self.changed.notify_all()

    def _on_publish(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        with self.changed:
            self.published += 1
            self.changed.notify_all()


def url_problem(options: MqttOptions) -> str | None:
    """A path in the url, which MQTT has no place for, with the fix; None when there is none."""
    parts = urlsplit(options.url)
    if parts.path in ("", "/"):
        return None
    return (
        f"url {options.url!r} has a path, which the mqtt sink ignores: "
        f'write url = "{parts.scheme}://{parts.netloc}" and put the prefix in topic '
        f'(topic = "{parts.path.strip("/")}/{{device_id}}/{{sensor}}")'
    )


def _parse_url(name: str, options: MqttOptions) -> tuple[str, int, bool]:
    """(host, port, tls) from `mqtt://host[:port]` or `mqtts://host[:port]`."""
    parts = urlsplit(options.url)
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except (ValueError, KeyError) as e:
        raise ConfigError(f"sink {name}: bad url {options.url!r}: {e}") from e
    if not parts.hostname:
        raise ConfigError(f"sink {name}: url {options.url!r} has no host")
    if parts.username is not None or parts.password is not None:
        # Kept out of the url so that it can be logged: use `username` and `password_file`.
        raise ConfigError(f"sink {name}: put credentials in username and password_file")
    return parts.hostname, port, parts.scheme == "mqtts"


def _tls_context(name: str, options: MqttOptions) -> ssl.SSLContext:
    """Verifying context: the system's CAs, or only `ca_bundle`'s; hostnames checked."""
    cafile = str(options.ca_bundle) if options.ca_bundle is not None else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"sink {name}: cannot load ca_bundle {cafile}: {e}") from e


def _check_topic(name: str, options: MqttOptions) -> None:
    """Fail at startup on a template that cannot render, or that renders a wildcard."""
    try:
        sample = options.topic.format(**dict.fromkeys(TOPIC_FIELDS, "x"))
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"sink {name}: topic {options.topic!r} does not render ({e!r}); "
            "it may use {device_id}, {sensor} and {sensor_type}"
        ) from e
    if not sample or "+" in sample or "#" in sample or "\0" in sample:
        raise ConfigError(
            f"sink {name}: topic {options.topic!r} must be non-empty, with no wildcard (+ or #)"
        )


def _os_error(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


SINK = MqttSink
