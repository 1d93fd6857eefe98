"""Probing a sink without sending a reading: `pilog check`'s row per sink.

`probe_sink` opens the sink (which checks its extra and settings) and calls its `probe`, which
stops at the first step that fails and says what to change. The steps the sinks share are
here: the url's host and port (`url_problem`), reaching them (`reach`: the host resolves, then
accepts a TCP connection; skipped when a proxy is in the way), and one harmless request answered
as an Outcome (`probe_request`). Each sink adds the protocol's harmless request with its
credentials (docs/sinks.md): http-json POSTs the empty batch `[]`; influx-line GETs `/ping` and
POSTs zero lines to its write URL; mqtt CONNECTs and DISCONNECTs with a client id of its own
(`<client_id>-check`), so a running pilog's session is left alone.
Nothing is stored anywhere. Every step is bounded by one deadline: the sink's `timeout`, capped
by the caller.
"""

from __future__ import annotations

import dataclasses
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from pilog.config import SinkConfig
from pilog.errors import ConfigError
from pilog.uploader.http import classify
from pilog.uploader.sink import Outcome, OutcomeKind, SinkContext, secret_env_name

PROBE_CLIENT_SUFFIX = "-check"
DEFAULT_PORTS = {"http": 80, "https": 443, "mqtt": 1883, "mqtts": 8883}
NO_ANSWER = "no answer in time"  # a probe_request timed out; the caller knows the budget


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Whether the sink can deliver, and what was seen or what to fix."""

    ok: bool
    detail: str


class ProbeFailed(Exception):
    """A step failed; the message says what and how to fix it."""

    def __init__(self, message: str, kind: OutcomeKind = "rejected") -> None:
        super().__init__(message)
        self.kind: OutcomeKind = kind


class ProbeTimedOut(Exception):
    """`what` (a URL, host:port) gave no answer before the deadline; `fix` follows the budget."""

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix


def unexpected(url: str, outcome: Outcome) -> ProbeFailed | ProbeTimedOut:
    """An answer no other rule explains: a 5xx, 429, a timeout, a TLS or network error."""
    if outcome.detail == NO_ANSWER:
        return ProbeTimedOut(url)
    return ProbeFailed(f"{url}: {outcome.detail}", "retry")


def probe_steps(
    steps: Callable[[], str], deadline: float, ca_bundle: Path | None = None
) -> Outcome:
    """Run a sink's probe steps as an Outcome: `ack` with what was seen, or what failed.

    `steps` raises ProbeFailed, ProbeTimedOut or ConfigError; `ca_bundle` is named in the
    fix of a failed certificate verification.
    """
    budget = max(deadline - time.monotonic(), 0.0)
    try:
        return Outcome("ack", steps())
    except ProbeTimedOut as e:
        return Outcome("retry", f"no answer from {e.what} within {round(budget, 2):g}s{e.fix}")
    except (ProbeFailed, ConfigError) as e:
        detail = str(e)
        if "certificate verify failed" in detail.lower():
            detail += (
                ": set ca_bundle to the CA file that signed the server's certificate"
                if ca_bundle is None
                else f": {ca_bundle} is not the CA that signed the server's certificate"
            )
        return Outcome(e.kind if isinstance(e, ProbeFailed) else "rejected", detail)


def probe_sink(
    config: SinkConfig,
    device_id: str,
    data_dir: Path,
    timeout_s: float,
    search: Sequence[Path] = (),
) -> ProbeResult:
    """Open the sink and run its probe within `timeout_s`; never writes a reading."""
    from pilog.uploader.sinks import open_sink  # noqa: PLC0415  (the registry imports this)

    context = SinkContext(device_id, "0" * 32, data_dir)
    try:
        sink = open_sink(config, context, search)
    except ConfigError as e:
        return ProbeResult(False, str(e))
    # From here: opening a sink does no network I/O (SinkPlugin), and the budget is the probe's.
    deadline = time.monotonic() + timeout_s
    try:
        outcome = sink.probe(deadline)
    finally:
        sink.close()
    return ProbeResult(outcome.kind == "ack", outcome.detail)


def probe_request(
    client: httpx.Client,
    method: str,
    url: str,
    deadline: float,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    secrets: tuple[str, ...] = (),
) -> Outcome:
    """One request answered as an Outcome (as the sinks read answers), within `deadline`."""
    timeout = max(deadline - time.monotonic(), 0.001)
    try:
        response = client.request(method, url, content=body, headers=headers, timeout=timeout)
        outcome = classify(response)
    except httpx.TimeoutException:
        outcome = Outcome("retry", NO_ANSWER)
    except (httpx.TransportError, httpx.DecodingError) as e:
        outcome = Outcome("retry", f"network error: {type(e).__name__}: {e}")
    detail = outcome.detail
    for secret in secrets:
        detail = detail.replace(secret, "***")
    return dataclasses.replace(outcome, detail=detail)


# --- the url's host and port -------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """What is wrong with the host and port of `url`, with the fix; None when nothing is."""
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as e:
        return f'url {url!r} has a bad port ({e}): write url = "{parts.scheme}://host:port…"'
    if not parts.hostname:
        return f'url {url!r} has no host: write url = "{parts.scheme}://host:port…"'
    return None


# --- step 3: the host resolves and accepts a connection ---------------------------------------


def reach(url: str, deadline: float) -> str | None:
    """Connect to the url's host and port; or name the proxy variable httpx will use instead.

    Raises ProbeFailed or ProbeTimedOut naming what to check; returns the proxy variable's
    name (`HTTPS_PROXY`) when the request goes through one, else None.
    """
    problem = url_problem(url)
    if problem is not None:
        raise ProbeFailed(problem)
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
    proxied = parts.scheme in ("http", "https") and urllib.request.getproxies().get(parts.scheme)
    if proxied and not urllib.request.proxy_bypass(host):
        # A direct connection would prove nothing; the request of the next step goes through
        # the proxy. Its variable is named, not its value, which may hold a password.
        return f"{parts.scheme.upper()}_PROXY"
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=_left(deadline)):
            pass
    except socket.gaierror as e:
        raise ProbeFailed(
            f"cannot resolve the host {host!r} ({e.strerror}): check the host name in url, "
            "and this box's DNS (/etc/resolv.conf)",
            "retry",
        ) from e
    except ConnectionRefusedError as e:
        raise ProbeFailed(
            f"{where} refused the connection (nothing listens there): check the port in url, "
            "and that the server runs",
            "retry",
        ) from e
    except TimeoutError as e:
        raise ProbeTimedOut(
            where, ": a firewall drops the packets, or the address in url is wrong"
        ) from e
    except OSError as e:
        raise ProbeFailed(f"cannot connect to {where}: {e.strerror or e}", "retry") from e
    return None


def through_proxy(proxied: str | None) -> str:
    """The note for a probe's detail when its request went through a proxy."""
    return f" (through ${proxied})" if proxied else ""


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


# --- what the sinks' probes share ------------------------------------------------------------


def token_hint(config: SinkConfig, token_file: Path | None) -> str:
    """Where the sink's token comes from, for a refused token's fix."""
    env = secret_env_name(config.name, "token")
    if token_file is not None:
        return f"check the token in {token_file}"
    return f"no token is configured: set token_file (or ${env})"
