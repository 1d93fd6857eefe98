"""Messages from an MQTT broker (Tasmota, ESPHome, zigbee2mqtt), through paho-mqtt 2.x.

One subscription to `topics` (`+` and `#` wildcards) over MQTT 3.1.1 with a clean session;
each message is one reading. A payload is a JSON object, mapped to fields as in `tcp_json`
(`fields.py`), or one value (an ESPHome `.../state` topic: a number, `true`, a JSON string or
plain text such as `ON`), which becomes one field named by `field`. Field names may take topic
levels (`{1}` in `prefix` or `field` is the second level) and follow `field_names.field_name`.

Connection: `open` connects, waits for CONNACK and SUBACK, and raises when it cannot; `read`
raises when the connection is lost (broker restart, keepalive timeout). The runtime then closes
the driver and opens a new one with backoff, which reconnects and subscribes again: like
`tcp_json`, there is no reconnect loop here. Messages published while pilog is not connected
are not delivered (clean session). Retained messages, which the broker sends on every
subscribe and whose age is unknown, are skipped unless `retained = true`.

paho runs on the driver's worker thread: `read` calls `Client.loop`, which waits on the socket
and calls back `_on_message` in the same thread, so nothing here is shared between threads.
"""

from __future__ import annotations

import math
import secrets
import ssl
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import msgspec

from pilog.drivers.base import READ_WAIT_S, DriverContext, Payload, StreamingDriver
from pilog.drivers.field_names import field_name
from pilog.drivers.fields import FieldError, FieldSelector, FieldSpec, decode_json, scalar
from pilog.errors import ConfigError, PilogError, mqtt_extra_missing

try:
    from paho.mqtt.client import Client, ConnectFlags, MQTTMessage, error_string
    from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    HAVE_PAHO = True
except ImportError:  # the extra is not installed; opening the driver says how to get it
    HAVE_PAHO = False

KEEPALIVE_S = 60  # paho pings after this long without traffic, gives up this long after
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
MAX_MESSAGES_PER_READ = 1000  # so that read returns promptly under a flood
_FORMATTER = string.Formatter()


class MqttOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str  # mqtt://host[:port] or mqtts://host[:port]
    topics: list[str]  # subscription filters; `+` is one level, `#` the rest
    qos: Literal[0, 1] = 0
    username: str | None = None
    password_file: str | None = None  # read at each connect; never logged
    ca_bundle: str | None = None  # PEM CAs for mqtts://, instead of the system's
    client_id: str | None = None  # default: pilog-<sensor>-<random>
    payload: Literal["auto", "json", "number"] = "auto"
    fields: FieldSpec = None  # of a JSON object; not set: every top-level number, bool, string
    optional_fields: FieldSpec = None  # of a JSON object, taken when present
    field: str = "value"  # the name of a single value; may use topic levels: "{3}"
    prefix: str = ""  # put before every field name; may use topic levels: "{1}_"
    retained: bool = False  # record retained messages (the broker's last value, of any age)
    sensor_type: str = "mqtt"
    connect_timeout_ms: int = 4000  # below the runtime's shortest default timeout (5 s)
    max_payload_bytes: int = 65536

    def __post_init__(self) -> None:
        broker(self.url)
        if not self.topics:
            raise ValueError("topics must name at least one topic filter")
        for topic in self.topics:
            check_filter(topic)
        if self.ca_bundle is not None and not self.url.startswith("mqtts://"):
            raise ValueError("ca_bundle needs an mqtts:// url")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username (MQTT 3.1.1)")
        if not self.field:
            raise ValueError("field must not be empty")
        for key, template in (("field", self.field), ("prefix", self.prefix)):
            check_template(key, template, self.topics)
        FieldSelector(self.fields, self.optional_fields)  # a bad path or name is a config error
        if self.connect_timeout_ms <= 0 or self.max_payload_bytes <= 0:
            raise ValueError("connect_timeout_ms and max_payload_bytes must be positive")


class BrokerError(PilogError, ConnectionError):
    """The broker cannot be reached, refused us, or went away."""


class MqttDriver(StreamingDriver):
    """Subscribes to `topics` and turns each message into one reading; see the module doc."""

    name: ClassVar[str] = "mqtt"
    description: ClassVar[str] = "MQTT messages (JSON objects, numbers, states) from topic filters"
    sensor_type: ClassVar[str] = "mqtt"
    Options = MqttOptions

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        self._opts: MqttOptions = ctx.options
        # The runtime reads sensor_type from the instance; the class value is the default.
        self.sensor_type = self._opts.sensor_type  # type: ignore[misc]
        self._fields = FieldSelector(self._opts.fields, self._opts.optional_fields)
        self._host, self._port, self._tls = broker(self._opts.url)
        self._where = f"{self._host}:{self._port}"
        self._client: Any = None  # a paho Client while open
        self._connack: Any = None  # ReasonCode of the CONNACK
        self._granted: list[Any] | None = None  # ReasonCodes of the SUBACK
        self._inbox: list[Any] = []  # MQTTMessages received, not yet decoded
        self._lost: BrokerError | None = None  # the connection loss read raises next
        self._skipped_retained = False

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        if not HAVE_PAHO:
            raise ConfigError(mqtt_extra_missing("the mqtt driver"))
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def read(self) -> list[Payload]:
        """Wait up to READ_WAIT_S for messages; return the readings they make."""
        if self._lost is not None:
            raise self._lost
        if self._client is None:
            raise BrokerError(f"mqtt {self._where}: not connected")
        try:
            self._loop(READ_WAIT_S)
            # Take what else is already buffered: paho handles one packet per loop call.
            while self._inbox and len(self._inbox) < MAX_MESSAGES_PER_READ:
                before = len(self._inbox)
                self._loop(0)
                if len(self._inbox) == before:
                    break
        except BrokerError as e:
            if not self._inbox:
                raise
            self._lost = e  # return what came before the loss; raise on the next read
        inbox, self._inbox = self._inbox, []
        out: list[Payload] = []
        for message in inbox:
            payload = self._decode(message)
            if payload is not None:
                out.append(payload)
        return out

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.disconnect()  # a DISCONNECT if still connected, and the socket closed
        except Exception as e:  # close never raises
            self.ctx.log.debug("mqtt %s: disconnect: %s", self._where, e)
        client.on_connect = client.on_subscribe = client.on_message = None

    def _open(self) -> None:
        deadline = time.monotonic() + self._opts.connect_timeout_ms / 1000
        self._connack, self._granted, self._inbox, self._lost = None, None, [], None
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._opts.client_id
            or f"pilog-{self.ctx.sensor.name}-{secrets.token_hex(4)}",
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        if self._opts.username is not None:
            client.username_pw_set(self._opts.username, self._password())
        if self._tls:
            client.tls_set_context(self._tls_context())
        client.connect_timeout = self._opts.connect_timeout_ms / 1000
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        try:
            # Blocking: TCP connect, TLS handshake, CONNECT sent; bounded by connect_timeout.
            client.connect(self._host, self._port, keepalive=KEEPALIVE_S)
        except OSError as e:  # refused, unreachable, DNS, timeout, TLS verification
            raise BrokerError(f"mqtt {self._where}: cannot connect: {e}") from e
        self._wait_until(lambda: self._connack is not None, "CONNACK", deadline)
        if self._connack.is_failure:  # paho 2.2 hangs up first, so _loop has raised already
            raise BrokerError(f"mqtt {self._where} refused the connection: {self._connack}")
        subscriptions: list[tuple[str, int]] = [(t, self._opts.qos) for t in self._opts.topics]
        client.subscribe(subscriptions)
        self._wait_until(lambda: self._granted is not None, "SUBACK", deadline)
        assert self._granted is not None
        for topic, granted in zip(self._opts.topics, self._granted, strict=True):
            if granted.is_failure:
                raise BrokerError(f"mqtt {self._where} refused the subscription to {topic!r}")
        self.ctx.log.info("mqtt %s: subscribed to %s", self._where, ", ".join(self._opts.topics))

    def _wait_until(self, done: Callable[[], bool], what: str, deadline: float) -> None:
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(f"mqtt {self._where}: no {what} within the connect timeout")
            self._loop(min(left, READ_WAIT_S))

    def _loop(self, timeout: float) -> None:
        """Let paho read, write and ping once; raise when the connection is gone."""
        rc = self._client.loop(timeout)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return
        if self._connack is not None and self._connack.is_failure:  # paho hangs up on a refusal
            raise BrokerError(f"mqtt {self._where} refused the connection: {self._connack}")
        raise BrokerError(f"mqtt {self._where}: connection lost ({error_string(rc)})")

    def _password(self) -> str | None:
        if self._opts.password_file is None:
            return None
        path = Path(self._opts.password_file)
        try:
            value = path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read the password file {path}: {e.strerror}") from e
        if not value:
            raise ConfigError(f"the password file {path} is empty")
        return value

    def _tls_context(self) -> ssl.SSLContext:
        """Verifying context: the system's CAs, or only `ca_bundle`'s; hostnames checked."""
        try:
            return ssl.create_default_context(cafile=self._opts.ca_bundle)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load ca_bundle {self._opts.ca_bundle}: {e}") from e

    # -- paho callbacks (on this thread, inside Client.loop) ------------------------------

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connack = reason

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._granted = list(reasons)

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        self._inbox.append(message)  # decoded in read, where a bad one is rejected

    # -- one message to one payload -------------------------------------------------------

    def _decode(self, message: MQTTMessage) -> Payload | None:
        if message.retain and not self._opts.retained:
            if not self._skipped_retained:
                self._skipped_retained = True
                self.ctx.log.debug("mqtt %s: skipping retained messages", self._where)
            return None
        try:
            topic = message.topic
        except UnicodeDecodeError:
            self.reject("topic is not UTF-8")
            return None
        try:
            return self._payload(topic, message.payload)
        except FieldError as e:
            self.ctx.log.debug("mqtt %s: rejected a message on %s: %s", self._where, topic, e)
            self.reject(str(e))
            return None

    def _payload(self, topic: str, data: bytes | bytearray) -> Payload:
        """The reading a message makes; FieldError (the reject reason) if it makes none."""
        mode = self._opts.payload
        if len(data) > self._opts.max_payload_bytes:
            raise FieldError(f"payload longer than {self._opts.max_payload_bytes} bytes")
        try:
            doc = decode_json(data)
        except msgspec.DecodeError:
            if mode != "json" and _non_finite(data):
                raise FieldError("payload is not a finite number") from None
            if mode != "auto":
                reason = "payload is not JSON" if mode == "json" else "payload is not a number"
                raise FieldError(reason) from None
            doc = _text(data)
        levels = topic.split("/")
        prefix = render(self._opts.prefix, levels)
        if isinstance(doc, dict):
            if mode == "number":
                raise FieldError("payload is not a number")
            payload = self._fields.extract(doc, self.reject)
            return {field_name(prefix + k): v for k, v in payload.items()} if prefix else payload
        is_number = isinstance(doc, int | float) and not isinstance(doc, bool)
        if mode == "json":
            raise FieldError(f"payload is {_kind(doc)}, not a JSON object")
        if mode == "number" and not is_number:
            raise FieldError("payload is not a number")
        if isinstance(doc, float) and not math.isfinite(doc):
            raise FieldError("payload is not a finite number")
        if not isinstance(doc, bool | int | float | str):
            raise FieldError(f"payload is {_kind(doc)}, not a value or a JSON object")
        name = field_name(prefix + render(self._opts.field, levels))
        if not name:
            raise FieldError(f"topic {topic!r} makes no field name (no letter or digit)")
        return {name: scalar(doc, name)}


def broker(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from `mqtt://host[:port]` or `mqtts://host[:port]`."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"url {url!r} must start with mqtt:// or mqtts://")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as e:
        raise ValueError(f"url {url!r}: {e}") from e
    if not parts.hostname:
        raise ValueError(f"url {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        # Kept out of the url so that it can be logged: use `username` and `password_file`.
        raise ValueError("put credentials in username and password_file, not in the url")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"url {url!r}: only scheme, host and port are used")
    return parts.hostname, port, parts.scheme == "mqtts"


def check_filter(topic: str) -> None:
    """A valid MQTT topic filter (3.1.1 §4.7): `+` a whole level, `#` a whole last level."""
    levels = topic.split("/")
    if not topic or "\0" in topic:
        raise ValueError(f"topic filter {topic!r} is empty or holds NUL")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"topic filter {topic!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {topic!r}: '+' must be a whole level")


def check_template(key: str, template: str, topics: list[str]) -> None:
    """`template` uses only `{N}` topic levels, each present in every filter without `#`."""
    indices = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as e:
        raise ValueError(f"{key} {template!r}: {e}") from e
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isdigit() or spec or conversion:
            raise ValueError(f"{key} {template!r}: only topic levels like {{0}}, {{1}} may be used")
        indices.append(int(name))
    for topic in topics:
        depth = len(topic.split("/"))
        if not topic.endswith("#") and any(i >= depth for i in indices):
            raise ValueError(f"{key} {template!r}: topic {topic!r} has levels 0 to {depth - 1}")


def render(template: str, levels: list[str]) -> str:
    """`template` with `{N}` replaced by topic level N; FieldError if the topic is shorter."""
    if "{" not in template:
        return template
    try:
        return template.format(*levels)
    except IndexError:
        raise FieldError(f"a topic has too few levels for {template!r}") from None


def _text(data: bytes | bytearray) -> str:
    """A payload that is not JSON as a text state (`ON`, `online`); FieldError if it is not."""
    try:
        text = bytes(data).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise FieldError("payload is neither JSON nor UTF-8 text") from None
    if not text:
        raise FieldError("payload is empty")
    if text[0] in "{[":  # meant as JSON: a cut or broken document is not a text state
        raise FieldError("payload is not valid JSON")
    if not text.isprintable():
        raise FieldError("payload holds control characters, not text")
    return text


def _kind(doc: object) -> str:
    if doc is None:
        return "null"
    if isinstance(doc, list):
        return "an array"
    if isinstance(doc, bool):
        return "a boolean"
    return "a number" if isinstance(doc, int | float) else "a string"


def _non_finite(data: bytes | bytearray) -> bool:
    """Whether `data` spells NaN or an infinity (ESPHome publishes "nan" for a failed read)."""
    try:
        return not math.isfinite(float(data))
    except ValueError:
        return False


DRIVER = MqttDriver
