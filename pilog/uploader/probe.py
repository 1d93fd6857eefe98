"""Probing a sink without sending a reading: `pilog check`'s row per sink.

A probe stops at the first step that fails, and says what to change:
1. the sink's extra is installed (mqtt needs paho-mqtt);
2. the url has the shape its type wants (influx-line: the server's base URL; http-json: the
   endpoint's full path; mqtt: `mqtt[s]://host[:port]` with no path);
3. its host resolves, then accepts a TCP connection (skipped when a proxy is in the way);
4. the protocol's harmless request with the sink's credentials: http-json POSTs the empty batch
   `[]` (the contract's probe, docs/sinks.md); influx-line GETs `/ping` and POSTs zero lines
   to its write URL, which also proves the path, database or bucket, and token; mqtt CONNECTs and
   DISCONNECTs with a client id of its own (`<client_id>-check`), so a running pilog's session
   is left alone.
Nothing is stored anywhere. Every step is bounded by one deadline: the sink's `timeout`, capped
by the caller.
"""

from __future__ import annotations

import dataclasses
import socket
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from pilog.config import HttpJsonSinkConfig, InfluxLineSinkConfig, MqttSinkConfig, SinkConfig
from pilog.errors import ConfigError, mqtt_extra_missing
from pilog.uploader.http import classify
from pilog.uploader.sink import Outcome, SinkContext, secret_env_name

WRITE_PATHS = ("/api/v2/write", "/write")  # what influx-line appends to its url
# InfluxDB 2 before 2.0.9 refuses an empty write with this 400, after checking token and bucket.
EMPTY_WRITE_REFUSAL = "writing requires points"
EXAMPLE_ENDPOINT = "https://keep-0001.local:8000/api/readings"
PROBE_CLIENT_SUFFIX = "-check"
NO_ANSWER = "no answer in time"  # a probe_request timed out; the caller knows the budget


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Whether the sink can deliver, and what was seen or what to fix."""

    ok: bool
    detail: str


class _Failed(Exception):
    """A step failed; the message says what and how to fix it."""


class _TimedOut(Exception):
    """A request to the URL in the message got no answer before the deadline."""


def _unexpected(url: str, outcome: Outcome) -> _Failed | _TimedOut:
    """An answer no other rule explains: a 5xx, 429, a timeout, a TLS or network error."""
    return _TimedOut(url) if outcome.detail == NO_ANSWER else _Failed(f"{url}: {outcome.detail}")


def probe_sink(config: SinkConfig, device_id: str, data_dir: Path, timeout_s: float) -> ProbeResult:
    """Run the steps of the module doc within `timeout_s`; never writes a reading."""
    deadline = time.monotonic() + timeout_s
    context = SinkContext(device_id, "0" * 32, data_dir)
    try:
        _check_extra(config)
        problem = url_problem(config)
        if problem is not None:
            raise _Failed(problem)
        proxied = _reach(config, deadline, timeout_s)
        detail = _probe_protocol(config, context, deadline)
    except _TimedOut as e:
        return ProbeResult(False, f"no answer from {e} within {timeout_s:g}s")
    except (_Failed, ConfigError) as e:
        detail = str(e)
        if "certificate verify failed" in detail.lower():
            detail += (
                ": set ca_bundle to the CA file that signed the server's certificate"
                if config.ca_bundle is None
                else f": {config.ca_bundle} is not the CA that signed the server's certificate"
            )
        return ProbeResult(False, detail)
    return ProbeResult(True, detail + (f" (through ${proxied})" if proxied else ""))


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


# --- steps 1 and 2: the extra and the url's shape ---------------------------------------------


def _check_extra(config: SinkConfig) -> None:
    if isinstance(config, MqttSinkConfig):
        from pilog.uploader.sinks import mqtt  # noqa: PLC0415

        if not mqtt.HAVE_PAHO:
            raise _Failed(mqtt_extra_missing("the mqtt sink"))


def url_problem(config: SinkConfig) -> str | None:
    """What is wrong with the sink's url for its type, with the fix; None when nothing is."""
    parts = urllib.parse.urlsplit(config.url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as e:
        return f'url {config.url!r} has a bad port ({e}): write url = "{parts.scheme}://host:port…"'
    if not parts.hostname:
        return f'url {config.url!r} has no host: write url = "{parts.scheme}://host:port…"'
    if isinstance(config, InfluxLineSinkConfig):
        return _influx_url_problem(config, parts)
    if isinstance(config, MqttSinkConfig) and parts.path not in ("", "/"):
        return (
            f"url {config.url!r} has a path, which the mqtt sink ignores: "
            f'write url = "{parts.scheme}://{parts.netloc}" and put the prefix in topic '
            f'(topic = "{parts.path.strip("/")}/{{device_id}}/{{sensor}}")'
        )
    return None


def _influx_url_problem(
    config: InfluxLineSinkConfig, parts: urllib.parse.SplitResult
) -> str | None:
    path = parts.path.rstrip("/")
    suffix = next((s for s in WRITE_PATHS if path.endswith(s)), None)
    if suffix is None and not parts.query and not parts.fragment:
        return None
    base_path = path[: -len(suffix)] if suffix else path
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, base_path, "", ""))
    from pilog.uploader.sinks.influx_line import write_url  # noqa: PLC0415

    fix = [f'url = "{base}"']
    # Keys the query may hold that belong in the sink's own settings.
    query = urllib.parse.parse_qs(parts.query)
    for key, setting in (("db", "database"), ("bucket", "bucket"), ("org", "org")):
        if key in query:
            fix.append(f'{setting} = "{query[key][0]}"')
    if "db" in query and config.api == "v2":
        fix.append('api = "v1"')
    wrong = f"ends in {suffix}" if suffix else "has a query or fragment"
    return (
        f"url {config.url!r} {wrong}: it must be the server's base URL, as pilog appends the "
        f"write path itself (this one would POST to {write_url(config)}); write {', '.join(fix)}"
    )


# --- step 3: the host resolves and accepts a connection ---------------------------------------


def _reach(config: SinkConfig, deadline: float, timeout_s: float) -> str | None:
    """Connect to the url's host and port; or name the proxy variable httpx will use instead."""
    parts = urllib.parse.urlsplit(config.url)
    host = parts.hostname or ""
    port = parts.port or {"http": 80, "https": 443, "mqtt": 1883, "mqtts": 8883}[parts.scheme]
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
        raise _Failed(
            f"cannot resolve the host {host!r} ({e.strerror}): check the host name in url, "
            "and this box's DNS (/etc/resolv.conf)"
        ) from e
    except ConnectionRefusedError as e:
        raise _Failed(
            f"{where} refused the connection (nothing listens there): check the port in url, "
            "and that the server runs"
        ) from e
    except TimeoutError as e:
        raise _Failed(
            f"no answer from {where} within {timeout_s:g}s: a firewall drops the packets, "
            "or the address in url is wrong"
        ) from e
    except OSError as e:
        raise _Failed(f"cannot connect to {where}: {e.strerror or e}") from e
    return None


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


# --- step 4: the protocol's harmless request --------------------------------------------------


def _probe_protocol(config: SinkConfig, context: SinkContext, deadline: float) -> str:
    if isinstance(config, HttpJsonSinkConfig):
        return _probe_http_json(config, context, deadline)
    if isinstance(config, InfluxLineSinkConfig):
        return _probe_influx(config, context, deadline)
    return _probe_mqtt(config, context, deadline)


def _token_hint(config: HttpJsonSinkConfig | InfluxLineSinkConfig) -> str:
    env = secret_env_name(config.name, "token")
    if config.token_file is not None:
        return f"check the token in {config.token_file}"
    return f"no token is configured: set token_file (or ${env})"


def _probe_http_json(config: HttpJsonSinkConfig, context: SinkContext, deadline: float) -> str:
    from pilog.uploader.sinks.http_json import HttpJsonSink  # noqa: PLC0415

    sink = HttpJsonSink(config, context)
    try:
        outcome = sink.probe(deadline)
    finally:
        sink.close()
    url = config.url
    if outcome.kind == "ack":
        return f"{url} acknowledged the probe (an empty batch) with HTTP {outcome.status}"
    if outcome.kind == "unauthorized":
        raise _Failed(f"{url} refused the token ({outcome.detail}): {_token_hint(config)}")
    if outcome.status in (404, 405):
        no_path = " (it has none)" if urllib.parse.urlsplit(url).path in ("", "/") else ""
        raise _Failed(
            f"{url} has no endpoint for readings ({outcome.detail}): url must be the "
            f"endpoint's full path{no_path}, e.g. {EXAMPLE_ENDPOINT}"
        )
    if 300 <= outcome.status < 400:
        raise _Failed(
            f"{url} redirects ({outcome.detail}); pilog does not follow redirects: "
            "put the address it redirects to in url"
        )
    if outcome.kind in ("rejected", "too_large"):
        raise _Failed(
            f"{url} refused the probe, an empty batch `[]` ({outcome.detail}): a receiver of "
            "the contract acknowledges it (docs/sinks.md, http-json); check url and the receiver"
        )
    raise _unexpected(url, outcome)


def _probe_influx(config: InfluxLineSinkConfig, context: SinkContext, deadline: float) -> str:
    from pilog.uploader.sinks.influx_line import InfluxLineSink, write_url  # noqa: PLC0415

    sink = InfluxLineSink(config, context)
    try:
        ping = sink.ping(deadline)
        # 401 is a ping that needs auth (InfluxDB's ping-auth-enabled): the write says more.
        if ping.kind == "rejected" and ping.status != 401:
            raise _Failed(_influx_ping_failure(config, ping))
        if ping.kind != "ack" and ping.status != 401:
            raise _unexpected(f"{config.url.rstrip('/')}/ping", ping)
        write = sink.probe(deadline)
    finally:
        sink.close()
    url = write_url(config)
    if write.kind == "ack" or (write.status == 400 and EMPTY_WRITE_REFUSAL in write.detail):
        return f"ping answered; an empty write to {url} was accepted (HTTP {write.status})"
    if write.kind == "unauthorized":
        v1 = ""
        if config.api == "v1" and config.auth == "token":
            v1 = (
                " (InfluxDB 1.x: the token is username:password; VictoriaMetrics' -httpAuth "
                'takes it only with auth = "basic")'
            )
        raise _Failed(f"{url} refused the token ({write.detail}): {_token_hint(config)}{v1}")
    if write.status == 404:
        where = (
            f"database {config.database!r}"
            if config.api == "v1"
            else (f"bucket {config.bucket!r}" + (f" in org {config.org!r}" if config.org else ""))
        )
        raise _Failed(f"{url}: {write.detail}: create the {where}, or fix its name in the config")
    if write.kind in ("rejected", "too_large"):
        raise _Failed(
            f"{url} refused an empty write ({write.detail}): check url (the server's base URL), "
            "api, and database (v1) or bucket and org (v2)"
        )
    raise _unexpected(url, write)


def _influx_ping_failure(config: InfluxLineSinkConfig, ping: Outcome) -> str:
    return (
        f"{config.url.rstrip('/')}/ping answered {ping.detail}: no InfluxDB or VictoriaMetrics "
        "API at this url; url must be the server's base URL, e.g. http://127.0.0.1:8086"
    )


def _probe_mqtt(config: MqttSinkConfig, context: SinkContext, deadline: float) -> str:
    from pilog.uploader.sinks.mqtt import MqttSink  # noqa: PLC0415

    client_id = (config.client_id or f"pilog-{context.device_id}-{config.name}") + (
        PROBE_CLIENT_SUFFIX
    )
    sink = MqttSink(msgspec.structs.replace(config, client_id=client_id), context)
    try:
        outcome = sink.probe(deadline)
    finally:
        sink.close()
    if outcome.kind == "ack":
        return f"{outcome.detail}; CONNECT accepted, then DISCONNECT"
    if outcome.kind == "unauthorized":
        # mosquitto 2 answers "Not authorized" to a wrong password as well as to no user.
        if config.username is None:
            fix = "no username is configured: set username and password_file (or allow anonymous "
            fix += "clients in the broker)"
        else:
            where = config.password_file or "$" + secret_env_name(config.name, "password")
            fix = f"check username ({config.username!r}) and the password in {where}"
        raise _Failed(f"{outcome.detail}: {fix}")
    raise _Failed(outcome.detail)
