"""A JSON document fetched by HTTP GET on every poll (a device's status page, a REST API)."""

from __future__ import annotations

from typing import ClassVar

import httpx
import msgspec

from pilog.drivers.base import DriverContext, Payload, PollingDriver
from pilog.drivers.fields import FieldError, FieldSelector, FieldSpec, decode_json
from pilog.errors import PilogError

DEFAULT_TIMEOUT_MS = 4000  # below the runtime's shortest default (5 s): httpx times out first
TIMEOUT_SHARE = 0.8  # of a sensor's timeout_ms, so the request fails before the runtime gives up


class HttpPollOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    fields: FieldSpec = None  # not set: every top-level number, boolean and string
    optional_fields: FieldSpec = None  # taken when present in a document

    def __post_init__(self) -> None:
        FieldSelector(self.fields, self.optional_fields)  # a bad path or name is a config error


class HttpPollDriver(PollingDriver):
    """GETs `url` each poll and maps its JSON body to one reading.

    A failed request (no connection, timeout, status other than 2xx) raises: the device is
    unavailable, and the runtime reports it and retries with backoff. A 2xx answer whose body
    is not JSON or lacks the configured fields is bad input: rejected, no reading.
    """

    name: ClassVar[str] = "http_poll"
    description: ClassVar[str] = "JSON fetched by HTTP GET on an interval, with a field mapping"
    sensor_type: ClassVar[str] = "http_poll"
    Options = HttpPollOptions

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        self._opts: HttpPollOptions = ctx.options
        self._fields = FieldSelector(self._opts.fields, self._opts.optional_fields)
        self._client: httpx.Client | None = None
        timeout_ms = ctx.sensor.timeout_ms
        self._timeout_s = (
            timeout_ms * TIMEOUT_SHARE / 1000
            if timeout_ms is not None
            else DEFAULT_TIMEOUT_MS / 1000
        )

    def open(self) -> None:
        # No request here: an unreachable device fails the first poll, reported the same way.
        self._client = httpx.Client(
            headers=self._opts.headers, timeout=self._timeout_s, follow_redirects=True
        )

    def poll(self) -> list[Payload]:
        if self._client is None:
            raise RuntimeError("http_poll: poll before open")
        response = self._client.get(self._opts.url)
        if not response.is_success:
            raise HttpStatusError(f"GET {self._opts.url}: HTTP {response.status_code}")
        try:
            doc = decode_json(response.content)
        except msgspec.DecodeError:
            self.reject("body is not JSON")
            return []
        try:
            return [self._fields.extract(doc, self.reject)]
        except FieldError as e:
            self.reject(str(e))
            return []

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class HttpStatusError(PilogError, ConnectionError):
    """The server answered, but not with 2xx: the device or service is unavailable."""


DRIVER = HttpPollDriver
