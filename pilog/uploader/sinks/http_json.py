"""`http-json`: the JSON reading API of the design's wire contract.

`POST {url}` with a JSON array, one object per reading:
`{"id", "device_id", "seq", "sensor", "sensor_type", "payload", "timestamp"}`, gzip when
enabled, `Idempotency-Key: {device_id}:{epoch}:{first_seq}-{last_seq}`, a bearer token when
configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from pilog.config import HttpJsonSinkConfig
from pilog.events import Event
from pilog.uploader.http import bearer_token, encode_body, make_client, post
from pilog.uploader.sink import Outcome, Prepared, SinkContext, readings

_encode = msgspec.json.Encoder().encode


class HttpJsonSink:
    def __init__(self, config: HttpJsonSinkConfig, context: SinkContext) -> None:
        self.config = config
        self.context = context
        self._headers = {"Content-Type": "application/json"}
        token = bearer_token(config)
        self._secrets = (token,) if token else ()
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._client = make_client(config, context)
        self._prepared: Prepared[tuple[bytes, dict[str, str]]] = Prepared()

    def objects(self, batch: Sequence[Event]) -> list[dict[str, Any]]:
        return [self.context.reading_object(e, r) for e, r in readings(batch)]

    def prepare(self, batch: Sequence[Event]) -> None:
        """Encode `batch` now, for its `send` (see `Prepared`)."""
        self._prepared.put(batch, self._request(batch))

    def send(self, batch: Sequence[Event]) -> Outcome:
        body, headers = self._prepared.take(batch) or self._request(batch)
        return post(self._client, self.config.url, body, headers, self._secrets)

    def _request(self, batch: Sequence[Event]) -> tuple[bytes, dict[str, str]]:
        body, extra = encode_body(_encode(self.context.wire_readings(batch)), self.config.gzip)
        key = self.context.idempotency_key(batch)
        return body, {**self._headers, **extra, "Idempotency-Key": key}

    def probe(self, deadline: float) -> Outcome:
        """POST the contract's probe, an empty batch `[]`: answered like a batch, stores nothing."""
        from pilog.uploader.probe import probe_request  # noqa: PLC0415

        body, extra = encode_body(b"[]", self.config.gzip)
        headers = {**self._headers, **extra}
        return probe_request(
            self._client, "POST", self.config.url, deadline, body, headers, self._secrets
        )

    def close(self) -> None:
        self._client.close()
