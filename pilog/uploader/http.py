"""What the HTTP sinks share: one pooled client, the gzip body, and the reading of answers.

The answer table is the design's wire contract: 2xx ack; network error, 408, 429, 5xx retry
(honouring `Retry-After`); 413 split; 401/403 pause; any other 4xx rejects the batch.
"""

from __future__ import annotations

import dataclasses
import email.utils
import gzip
import ssl
import time
import urllib.parse
from pathlib import Path

import httpx
import msgspec

from pilog.config import SinkConfig
from pilog.errors import ConfigError
from pilog.uploader.sink import Outcome, SinkContext, read_secret, secret_env_name

# Level 1 on sensor JSON: about 90% of level 5's ratio (11x against 12x) at about 40% of its
# CPU, which on a backlog upload is the scarcer of the two (tools/bench_upload.py).
GZIP_LEVEL = 1
DETAIL_BODY_CHARS = 200  # of a refusal's body, kept for the dead letter and `pilog status`
RETRY_STATUSES = frozenset({408, 425, 429})


class HttpOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The keys every HTTP sink takes besides the common ones."""

    url: str = ""  # required: http:// or https://
    token_file: Path | None = None  # else $PILOG_SINK_<NAME>_TOKEN; never logged
    ca_bundle: Path | None = None  # PEM file to verify the server with, instead of the system's
    gzip: bool = True  # Content-Encoding: gzip

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")


def url_without_secrets(url: str) -> str:
    """`url` without user and password, for messages (`where`)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def make_client(config: SinkConfig, options: HttpOptions, context: SinkContext) -> httpx.Client:
    """A client that keeps its connection, verifies TLS (with `ca_bundle` if given)."""
    verify: ssl.SSLContext | bool = True
    if options.ca_bundle is not None:
        try:
            verify = ssl.create_default_context(cafile=str(options.ca_bundle))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"sink {config.name}: cannot use ca_bundle {options.ca_bundle}: "
                f"{getattr(e, 'strerror', None) or e}"
            ) from e
    return httpx.Client(
        verify=verify,
        timeout=httpx.Timeout(config.timeout),
        headers={"User-Agent": context.user_agent},
        follow_redirects=False,
    )


def bearer_token(config: SinkConfig, options: HttpOptions) -> str | None:
    token = read_secret(options.token_file, secret_env_name(config.name, "token"), what="token")
    if token is not None and not token.isprintable():
        # httpx would refuse the header quoting it, and every retry would fail the same way.
        raise ConfigError(
            f"sink {config.name}: the token has a line break or another control character"
        )
    return token


def encode_body(body: bytes, use_gzip: bool) -> tuple[bytes, dict[str, str]]:
    if not use_gzip:
        return body, {}
    return gzip.compress(body, GZIP_LEVEL, mtime=0), {"Content-Encoding": "gzip"}


def post(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: dict[str, str],
    secrets: tuple[str, ...] = (),
) -> Outcome:
    """POST and read the answer as an Outcome; never raises for what the network does.

    `secrets` are blanked out of the detail: a receiver may echo headers in an error page.
    """
    try:
        outcome = classify(client.post(url, content=body, headers=headers))
    except httpx.TimeoutException as e:
        outcome = Outcome("retry", f"timed out ({type(e).__name__})")
    except (httpx.TransportError, httpx.DecodingError) as e:
        outcome = Outcome("retry", f"network error: {type(e).__name__}: {e}")
    detail = outcome.detail
    for secret in secrets:
        detail = detail.replace(secret, "***")
    return dataclasses.replace(outcome, detail=detail) if detail != outcome.detail else outcome


def classify(response: httpx.Response) -> Outcome:
    status = response.status_code
    if 200 <= status < 300:
        return Outcome("ack", status=status)
    detail = f"HTTP {status}: {_snippet(response)}"
    if status in RETRY_STATUSES or status >= 500:
        return Outcome("retry", detail, status, retry_after(response.headers.get("Retry-After")))
    if status == 413:
        return Outcome("too_large", detail, status)
    if status in (401, 403):
        return Outcome("unauthorized", detail, status)
    if 400 <= status < 500:
        return Outcome("rejected", detail, status)
    # 1xx or 3xx as a final answer: the receiver is misconfigured; keep the data and retry.
    return Outcome("retry", detail, status)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _snippet(response: httpx.Response) -> str:
    try:
        text = response.text
    except (httpx.DecodingError, UnicodeDecodeError):
        return f"<{len(response.content)} undecodable bytes>"
    text = " ".join(text.split())
    if len(text) > DETAIL_BODY_CHARS:
        text = text[:DETAIL_BODY_CHARS] + "…"
    return text or response.reason_phrase or "(empty body)"
