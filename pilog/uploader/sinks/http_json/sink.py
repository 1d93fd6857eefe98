"""`http-json`: the JSON reading API of the design's wire contract.

`POST {url}` with a JSON array, one object per reading:
`{"id", "device_id", "seq", "sensor", "sensor_type", "payload", "timestamp"}`, gzip when
enabled, `Idempotency-Key: {device_id}:{epoch}:{first_seq}-{last_seq}`, a bearer token when
configured.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from pilog.config import SinkConfig
from pilog.events import Event
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

_encode = msgspec.json.Encoder().encode
EXAMPLE_ENDPOINT = "https://keep-0001.local:8000/api/readings"


class HttpJsonOptions(HttpOptions, frozen=True):
    """`http-json`'s keys: the endpoint's full URL, its token, TLS and gzip."""


class HttpJsonSink:
    """The JSON reading API: one POST of a JSON array per batch, ids and idempotency key."""

    Options: ClassVar[type[msgspec.Struct]] = HttpJsonOptions
    extra: ClassVar[str | None] = None

    def __init__(self, config: SinkConfig, options: HttpJsonOptions, context: SinkContext) -> None:
        self.config = config
        self.options = options
        self.context = context
        self._headers = {"Content-Type": "application/json"}
        token = bearer_token(config, options)
        self._secrets = (token,) if token else ()
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._client = make_client(config, options, context)
        self._closed = threading.Event()
        self._prepared: Prepared[tuple[bytes, dict[str, str]]] = Prepared()

    def where(self) -> str:
        return url_without_secrets(self.options.url)

    def objects(self, batch: Sequence[Event]) -> list[dict[str, Any]]:
        return [self.context.reading_object(e, r) for e, r in readings(batch)]

    def prepare(self, batch: Sequence[Event]) -> None:
        """Encode `batch` now, for its `send` (see `Prepared`)."""
        self._prepared.put(batch, self._request(batch))

    def send(self, batch: Sequence[Event]) -> Outcome:
        if self._closed.is_set():
            raise RuntimeError(f"http-json sink {self.config.name} is closed")
        body, headers = self._prepared.take(batch) or self._request(batch)
        return post(self._client, self.options.url, body, headers, self._secrets)

    def body(self, batch: Sequence[Event]) -> bytes:
        """The batch as the contract's JSON array, before gzip."""
        return _encode(self.context.wire_readings(batch))

    def _request(self, batch: Sequence[Event]) -> tuple[bytes, dict[str, str]]:
        body, extra = encode_body(self.body(batch), self.options.gzip)
        key = self.context.idempotency_key(batch)
        return body, {**self._headers, **extra, "Idempotency-Key": key}

    def probe(self, deadline: float) -> Outcome:
        """POST the contract's probe, an empty batch `[]`: answered like a batch, stores nothing."""
        return probe_steps(lambda: self._probe(deadline), deadline, self.options.ca_bundle)

    def close(self) -> None:
        self._closed.set()
        self._client.close()

    def _probe(self, deadline: float) -> str:
        url = self.options.url
        proxied = reach(url, deadline)
        body, extra = encode_body(b"[]", self.options.gzip)
        headers = {**self._headers, **extra}
        outcome = probe_request(self._client, "POST", url, deadline, body, headers, self._secrets)
        if outcome.kind == "ack":
            return (
                f"{url} acknowledged the probe (an empty batch) with HTTP {outcome.status}"
                + through_proxy(proxied)
            )
        if outcome.kind == "unauthorized":
            raise ProbeFailed(
                f"{url} refused the token ({outcome.detail}): "
                f"{token_hint(self.config, self.options.token_file)}",
                "unauthorized",
            )
        if outcome.status in (404, 405):
            no_path = " (it has none)" if urllib.parse.urlsplit(url).path in ("", "/") else ""
            raise ProbeFailed(
                f"{url} has no endpoint for readings ({outcome.detail}): url must be the "
                f"endpoint's full path{no_path}, e.g. {EXAMPLE_ENDPOINT}"
            )
        if 300 <= outcome.status < 400:
            raise ProbeFailed(
                f"{url} redirects ({outcome.detail}); pilog does not follow redirects: "
                "put the address it redirects to in url"
            )
        if outcome.kind in ("rejected", "too_large"):
            raise ProbeFailed(
                f"{url} refused the probe, an empty batch `[]` ({outcome.detail}): a receiver "
                "of the contract acknowledges it (docs/sinks.md, http-json); check url and the "
                "receiver"
            )
        raise unexpected(url, outcome)


SINK = HttpJsonSink
