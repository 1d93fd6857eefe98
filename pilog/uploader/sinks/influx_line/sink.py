"""`influx-line`: readings as InfluxDB line protocol, for InfluxDB 1.x/2.x and VictoriaMetrics.

One line per reading, each ending in `\\n`:

    <sensor_type>,device=<device_id>,sensor=<sensor> <field>=<value>[,...] <ts_ns>

Tags are sorted by key, as InfluxDB recommends; fields keep the reading's order; the timestamp
is the event's wall time in nanoseconds (`precision=ns`). Field values by type: a float as its
round-tripping `repr` (`21.5`, `1e+300`); an int with an `i` suffix (`3i`); a bool as
`true`/`false`; a str double-quoted, with `"` and `\\` escaped by a backslash.

Escaping follows the line protocol reference's "special characters": a measurement escapes
comma and space; tag keys, tag values and field keys escape comma, equals sign and space. All
of them also escape the backslash itself, so a name ending in `\\` cannot swallow the
separator after it; a field key also escapes `"`, which InfluxDB 1.x and VictoriaMetrics would
take for the start of a string value. A measurement starting with `#` is written `\\#`, or the
line would be a comment. The protocol has no escape for a newline in any element (the
reference: "does not support the newline character"), so `\\n` and `\\r` become a space
everywhere, strings included.

What the protocol cannot carry is left out, never sent to be refused: NaN and infinities
(InfluxDB rejects them), ints outside int64, empty field keys. A reading left with no field, or
with an empty `sensor_type`, is skipped; the send still acknowledges the batch, and says how
many readings and fields it skipped in the outcome's detail, and warns once per run of
batches that needed skipping.

Endpoints, with `Content-Type: text/plain; charset=utf-8` and gzip when enabled:
- `api = "v2"`: `POST {url}/api/v2/write?org=<org>&bucket=<bucket>&precision=ns`.
- `api = "v1"`: `POST {url}/write?db=<database>&precision=ns` (InfluxDB 1.x, InfluxDB 2's 1.x
  compatibility API, VictoriaMetrics' `/write`).
A configured token goes in `Authorization: Token <token>` for both: InfluxDB 2 accepts its API
token that way on both endpoints, and InfluxDB 1.8+ takes `Token <username>:<password>` (put
`username:password` in the token file). With `auth = "basic"` the token (`username:password`)
goes in HTTP Basic auth instead: VictoriaMetrics' `-httpAuth.*` takes only that. The `u`/`p`
query parameters of 1.x are not used, so no secret ever lands in a URL or a log line.

Idempotency: a point is identified by measurement, tag set and timestamp, and writing it again
overwrites it with the same values. Re-sending a batch after a lost answer therefore changes
nothing, so no idempotency key is sent; the event's seq is not a tag, because a tag per event
would make a new series per reading.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import msgspec

from pilog.config import SinkConfig
from pilog.counts import counted
from pilog.errors import ConfigError
from pilog.events import Event, Reading, Value
from pilog.uploader.http import (
    HttpOptions,
    bearer_token,
    encode_body,
    make_client,
    post,
    url_without_secrets,
)
from pilog.uploader.probe import (
    ProbeFailed,
    probe_request,
    probe_steps,
    reach,
    through_proxy,
    token_hint,
    unexpected,
)
from pilog.uploader.sink import Outcome, Prepared, SinkContext, readings

log = logging.getLogger("pilog.uploader")

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1  # line protocol's `i` integers are int64
_NEWLINES = str.maketrans({"\n": " ", "\r": " "})
_MEASUREMENT_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})
# A bare `"` in a field key opens a quoted value to InfluxDB 1.x's and VictoriaMetrics' field
# scanners, which then swallow the timestamp; InfluxDB 1.x unescapes `\"` in keys.
_FIELD_KEY_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ ", '"': '\\"'})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
WRITE_PATHS = ("/api/v2/write", "/write")  # what influx-line appends to its url
# InfluxDB 2 before 2.0.9 refuses an empty write with this 400, after checking token and bucket.
EMPTY_WRITE_REFUSAL = "writing requires points"


class InfluxLineOptions(HttpOptions, frozen=True):
    """`influx-line`'s keys: the server's base URL, the API and where points go."""

    api: Literal["v1", "v2"] = "v2"  # v2: /api/v2/write; v1: /write (also VictoriaMetrics)
    org: str | None = None  # v2 (default: the token's organisation)
    bucket: str | None = None  # v2, required
    database: str | None = None  # v1, required
    auth: Literal["token", "basic"] = "token"  # basic: the token is user:password (VM httpAuth)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.api == "v2" and not self.bucket:
            raise ValueError("api = 'v2' needs `bucket` (and usually `org`)")
        if self.api == "v1" and not self.database:
            raise ValueError("api = 'v1' needs `database`")


@dataclass(slots=True)
class LineBatch:
    """An encoded batch: the body, and what the protocol could not carry."""

    body: bytes = b""
    lines: int = 0
    skipped_seqs: list[int] = field(default_factory=list)  # readings with nothing to write
    skipped_fields: int = 0  # NaN, infinities, out-of-range ints, empty keys

    def note(self) -> str:
        """One line on what was skipped, or "" when nothing was."""
        parts = []
        if self.skipped_fields:
            parts.append(
                f"skipped {counted(self.skipped_fields, 'field')} line protocol cannot carry"
            )
        if self.skipped_seqs:
            seqs = ", ".join(map(str, self.skipped_seqs[:5]))
            more = ", …" if len(self.skipped_seqs) > 5 else ""
            parts.append(
                f"skipped {counted(len(self.skipped_seqs), 'reading')} with no writable field "
                f"(seq {seqs}{more})"
            )
        return "; ".join(parts)


def encode_lines(batch: Sequence[Event], device_id: str) -> bytes:
    """The batch as line protocol, one line per writable reading."""
    return encode_batch(batch, device_id).body


def encode_batch(batch: Sequence[Event], device_id: str) -> LineBatch:
    """The batch as line protocol, with a count of what had to be left out."""
    out = LineBatch()
    device_tag = f",device={escape_key(device_id)}"  # `device` < `sensor`: tags stay sorted
    # A backlog's batch repeats a few sensors and field names: each is escaped once.
    heads: dict[tuple[str, str], str] = {}
    keys: dict[str, str] = {}
    shapes: dict[tuple[str, ...], str | None] = {}  # field names -> `k={},k={}`
    lines = []
    for event, reading in readings(batch):
        fields = _float_fields(reading.values, shapes)
        if fields is None:
            fields, skipped = _field_set(reading, keys)
            out.skipped_fields += skipped
        if not fields or not reading.sensor_type:
            out.skipped_seqs.append(event.seq)
            continue
        head = heads.get((reading.sensor_type, reading.sensor))
        if head is None:
            tags = f"{device_tag},sensor={escape_key(reading.sensor)}"
            head = f"{escape_measurement(reading.sensor_type)}{tags} "
            heads[reading.sensor_type, reading.sensor] = head
        lines.append(f"{head}{fields} {event.ts_ns}\n")
    out.lines = len(lines)
    out.body = "".join(lines).encode()
    return out


def escape_measurement(name: str) -> str:
    """A measurement name (the reading's `sensor_type`)."""
    escaped = name.translate(_NEWLINES).translate(_MEASUREMENT_ESCAPES)
    # A line starting with `#` is a comment to every parser; the backslash keeps it a point.
    return "\\" + escaped if escaped.startswith("#") else escaped


def escape_key(name: str) -> str:
    """A tag key or tag value."""
    return name.translate(_NEWLINES).translate(_KEY_ESCAPES)


def escape_field_key(name: str) -> str:
    """A field key (a key of the reading's values)."""
    return name.translate(_NEWLINES).translate(_FIELD_KEY_ESCAPES)


def field_value(value: Value) -> str | None:
    """The value as line protocol writes it, or None when the protocol cannot carry it."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i" if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return '"' + value.translate(_NEWLINES).translate(_STRING_ESCAPES) + '"'


def _float_fields(
    values: dict[str, Value], shapes: dict[tuple[str, ...], str | None]
) -> str | None:
    """`k=v,k=v` when every value is a finite float and every key writable (the usual
    reading), formatted by one template per set of field names; else None."""
    shape = tuple(values)
    template = shapes.get(shape, "")
    if template == "":
        template = shapes[shape] = _template(shape)
    if template is None:
        return None
    vals = values.values()
    try:
        # isfinite takes ints and bools too; float.__repr__ then refuses them (TypeError),
        # and an int too large for a float overflows: both go the field-by-field way.
        if not all(map(math.isfinite, vals)):  # type: ignore[arg-type]
            return None
        return template.format(*map(float.__repr__, vals))
    except (TypeError, OverflowError):
        return None


def _template(shape: tuple[str, ...]) -> str | None:
    if not shape or not all(shape):
        return None  # an empty key is skipped: the field-by-field way counts it
    escaped = (escape_field_key(k).replace("{", "{{").replace("}", "}}") for k in shape)
    return ",".join(f"{k}={{}}" for k in escaped)


def _field_set(reading: Reading, keys: dict[str, str] | None = None) -> tuple[str, int]:
    """`k=v,k=v` of the writable fields, and how many were skipped; `keys` caches escaped
    field keys across readings."""
    keys = {} if keys is None else keys
    parts = []
    for key, value in reading.values.items():
        # A finite float, the usual value, without field_value's checks: x - x is 0.0 for
        # every finite float and NaN for NaN and the infinities.
        if value.__class__ is float and value - value == 0.0:
            text: str | None = repr(value)
        else:
            text = field_value(value)
        if text is None or not key:
            continue
        escaped = keys.get(key)
        if escaped is None:
            escaped = keys[key] = escape_field_key(key)
        parts.append(f"{escaped}={text}")
    return ",".join(parts), len(reading.values) - len(parts)


def write_url(config: InfluxLineOptions) -> str:
    """The write endpoint of `config.api`, with its query string."""
    base = config.url.rstrip("/")
    if config.api == "v1":
        return f"{base}/write?{urllib.parse.urlencode({'db': config.database, 'precision': 'ns'})}"
    # Without `org`, InfluxDB 2 takes the token's own organisation.
    org = {"org": config.org} if config.org else {}
    params = {**org, "bucket": config.bucket, "precision": "ns"}
    return f"{base}/api/v2/write?{urllib.parse.urlencode(params)}"


def authorization(name: str, options: InfluxLineOptions, token: str) -> str:
    """The Authorization header: `Token …`, or Basic for servers that take only that."""
    if options.auth == "token":
        return f"Token {token}"
    if ":" not in token:
        raise ConfigError(f"sink {name}: auth = 'basic' needs the token as username:password")
    return "Basic " + base64.b64encode(token.encode()).decode("ascii")


def url_problem(options: InfluxLineOptions) -> str | None:
    """What is wrong with the url's shape, with the fix: it must be the server's base URL."""
    parts = urllib.parse.urlsplit(options.url)
    path = parts.path.rstrip("/")
    suffix = next((s for s in WRITE_PATHS if path.endswith(s)), None)
    if suffix is None and not parts.query and not parts.fragment:
        return None
    base_path = path[: -len(suffix)] if suffix else path
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, base_path, "", ""))
    fix = [f'url = "{base}"']
    # Keys the query may hold that belong in the sink's own settings.
    query = urllib.parse.parse_qs(parts.query)
    for key, setting in (("db", "database"), ("bucket", "bucket"), ("org", "org")):
        if key in query:
            fix.append(f'{setting} = "{query[key][0]}"')
    if "db" in query and options.api == "v2":
        fix.append('api = "v1"')
    wrong = f"ends in {suffix}" if suffix else "has a query or fragment"
    return (
        f"url {options.url!r} {wrong}: it must be the server's base URL, as pilog appends the "
        f"write path itself (this one would POST to {write_url(options)}); write {', '.join(fix)}"
    )


class InfluxLineSink:
    """InfluxDB line protocol over HTTP: InfluxDB 1.x/2.x, VictoriaMetrics."""

    Options: ClassVar[type[msgspec.Struct]] = InfluxLineOptions
    extra: ClassVar[str | None] = None

    def __init__(
        self, config: SinkConfig, options: InfluxLineOptions, context: SinkContext
    ) -> None:
        self.config = config
        self.options = options
        self.context = context
        self._url = write_url(options)
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        token = bearer_token(config, options)
        if token:
            self._headers["Authorization"] = authorization(config.name, options, token)
        self._secrets = (token,) if token else ()  # blanked out of a probe's detail
        self._client = make_client(config, options, context)
        self._skipping = False  # warn when readings start being skipped, not on every batch
        self._closed = threading.Event()
        self._prepared: Prepared[tuple[LineBatch, bytes, dict[str, str]]] = Prepared()

    def where(self) -> str:
        return url_without_secrets(self.options.url)

    def prepare(self, batch: Sequence[Event]) -> None:
        """Encode `batch` now, for its `send` (see `Prepared`)."""
        self._prepared.put(batch, self._request(batch))

    def _request(self, batch: Sequence[Event]) -> tuple[LineBatch, bytes, dict[str, str]]:
        encoded = encode_batch(batch, self.context.device_id)
        body, extra = encode_body(encoded.body, self.options.gzip)
        return encoded, body, {**self._headers, **extra}

    def send(self, batch: Sequence[Event]) -> Outcome:
        if self._closed.is_set():
            raise RuntimeError(f"influx-line sink {self.config.name} is closed")
        encoded, body, headers = self._prepared.take(batch) or self._request(batch)
        note = encoded.note()
        if note and not self._skipping:
            log.warning(
                "sink %s: %s (said once until a batch needs no skipping)", self.config.name, note
            )
        self._skipping = bool(note)
        if not encoded.lines:
            # Nothing the receiver could take; sending an empty body would only be refused.
            return Outcome("ack", note)
        outcome = post(self._client, self._url, body, headers)
        if outcome.kind == "ack" and note:
            return Outcome("ack", note, outcome.status)
        return outcome

    def ping(self, deadline: float) -> Outcome:
        """GET `{url}/ping`: InfluxDB 1.x/2.x and VictoriaMetrics answer 204, with no token."""
        url = f"{self.options.url.rstrip('/')}/ping"
        return probe_request(self._client, "GET", url, deadline, secrets=self._secrets)

    def probe(self, deadline: float) -> Outcome:
        """Ping, then POST zero lines to the write URL with the token: 2xx proves path,
        database or bucket, and token."""
        return probe_steps(lambda: self._probe(deadline), deadline, self.options.ca_bundle)

    def close(self) -> None:
        self._closed.set()
        self._client.close()

    def _probe(self, deadline: float) -> str:
        problem = url_problem(self.options)
        if problem is not None:
            raise ProbeFailed(problem)
        proxied = reach(self.options.url, deadline)
        ping = self.ping(deadline)
        # 401 is a ping that needs auth (InfluxDB's ping-auth-enabled): the write says more.
        if ping.kind == "rejected" and ping.status != 401:
            raise ProbeFailed(
                f"{self.options.url.rstrip('/')}/ping answered {ping.detail}: no InfluxDB or "
                "VictoriaMetrics API at this url; url must be the server's base URL, e.g. "
                "http://127.0.0.1:8086"
            )
        if ping.kind != "ack" and ping.status != 401:
            raise unexpected(f"{self.options.url.rstrip('/')}/ping", ping)
        body, extra = encode_body(b"", self.options.gzip)
        headers = {**self._headers, **extra}
        write = probe_request(
            self._client, "POST", self._url, deadline, body, headers, self._secrets
        )
        return self._judge_write(write) + through_proxy(proxied)

    def _judge_write(self, write: Outcome) -> str:
        url, o = self._url, self.options
        if write.kind == "ack" or (write.status == 400 and EMPTY_WRITE_REFUSAL in write.detail):
            return f"ping answered; an empty write to {url} was accepted (HTTP {write.status})"
        if write.kind == "unauthorized":
            v1 = ""
            if o.api == "v1" and o.auth == "token":
                v1 = (
                    " (InfluxDB 1.x: the token is username:password; VictoriaMetrics' -httpAuth "
                    'takes it only with auth = "basic")'
                )
            hint = token_hint(self.config, o.token_file)
            raise ProbeFailed(
                f"{url} refused the token ({write.detail}): {hint}{v1}", "unauthorized"
            )
        if write.status == 404:
            where = (
                f"database {o.database!r}"
                if o.api == "v1"
                else (f"bucket {o.bucket!r}" + (f" in org {o.org!r}" if o.org else ""))
            )
            raise ProbeFailed(
                f"{url}: {write.detail}: create the {where}, or fix its name in the config"
            )
        if write.kind in ("rejected", "too_large"):
            raise ProbeFailed(
                f"{url} refused an empty write ({write.detail}): check url (the server's base "
                "URL), api, and database (v1) or bucket and org (v2)"
            )
        raise unexpected(url, write)


SINK = InfluxLineSink
