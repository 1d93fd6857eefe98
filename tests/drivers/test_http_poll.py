"""The http_poll driver against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from pilog.drivers.http_poll.driver import HttpStatusError
from pilog.testing.drivers import open_driver, run_driver

WAIT_S = 30.0  # a bound for joining the server thread, never a measured result


@dataclass
class Route:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class Site:
    """What the server answers per path, and the requests it saw."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # for /stall


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        site = self.server.site
        site.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path == "/stall":
            site.release.wait(WAIT_S)  # answer only after the client gave up
            return
        route = site.routes.get(self.path, Route(404, b"not found", "text/plain"))
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        self.wfile.write(route.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.site = Site()

    def url(self, path: str) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{path}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.site.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(WAIT_S)


BODY = b'{"sensors": [{"temp": 21.5}, {"temp": 19}], "air": {"pm25": 7, "ok": true}, "id": "s1"}'


def test_fields_mapping_reads_dotted_paths_on_every_poll(server: _Server) -> None:
    server.site.routes["/data.json"] = Route(200, BODY)
    config = {
        "url": server.url("/data.json"),
        "headers": {"Authorization": "Bearer t0k"},
        "fields": {"temperature_c": "sensors.1.temp", "pm2_5_ugm3": "air.pm25", "ok": "air.ok"},
    }
    readings = run_driver("http_poll", config, polls=3)
    assert readings == [{"temperature_c": 19, "pm2_5_ugm3": 7, "ok": True}] * 3
    assert len(server.site.requests) == 3
    path, headers = server.site.requests[0]
    assert path == "/data.json"
    assert headers["authorization"] == "Bearer t0k"


def test_without_fields_every_top_level_scalar_is_a_value(server: _Server) -> None:
    server.site.routes["/"] = Route(200, b'{"t": 1.5, "n": 3, "s": "x", "nested": {"a": 1}}')
    assert run_driver("http_poll", {"url": server.url("/")}, polls=1) == [
        {"t": 1.5, "n": 3, "s": "x"}
    ]
    server.site.routes["/"] = Route(200, b'{"t": 2}')
    assert run_driver("http_poll", {"url": server.url("/"), "fields": ["t"]}, polls=1) == [{"t": 2}]


def test_tasmota_status_with_a_dotted_key_and_a_bare_nan(server: _Server) -> None:
    # Tasmota's /cm?cmnd=Status%208: its SENSOR JSON under StatusSNS, as old firmware prints it.
    server.site.routes["/cm"] = Route(
        200,
        b'{"StatusSNS":{"Time":"2026-11-22T08:00:00","SDS0X1":{"PM2.5":4.1,"PM10":nan},'
        b'"SI7021":{"Temperature":20.5,"Humidity":nan}}}',
    )
    config = {
        "url": server.url("/cm"),
        "fields": {"pm2_5_ugm3": 'StatusSNS.SDS0X1."PM2.5"', "pm10_ugm3": "StatusSNS.SDS0X1.PM10"},
        "optional_fields": {"temperature_c": "StatusSNS.SI7021.Temperature"},
    }
    with open_driver("http_poll", config) as driver:
        assert driver.poll() == [{"pm2_5_ugm3": 4.1, "temperature_c": 20.5}]
    assert driver.rejected == {
        "'StatusSNS.SDS0X1.PM10' is not a finite number: that value is left out": 1
    }


def test_non_2xx_raises_so_the_runtime_backs_off(server: _Server) -> None:
    server.site.routes["/down"] = Route(503, b'{"t": 1}')
    with open_driver("http_poll", {"url": server.url("/down")}) as driver:
        with pytest.raises(HttpStatusError, match="HTTP 503"):
            driver.poll()
        server.site.routes.pop("/down")
        with pytest.raises(HttpStatusError, match="HTTP 404"):
            driver.poll()
        server.site.routes["/down"] = Route(200, b'{"t": 1}')
        assert driver.poll() == [{"t": 1}]  # the same client recovers once the server does


def test_bad_bodies_are_rejected_not_read(server: _Server) -> None:
    site = server.site
    with open_driver("http_poll", {"url": server.url("/d"), "fields": {"t": "a.t"}}) as driver:
        for body in (
            b"<html>maintenance</html>",
            b"",
            b"[1]",
            b'{"a": {}}',
            b'{"a": {"t": null}}',
            b'{"a": {"t": 9223372036854775808}}',
        ):
            site.routes["/d"] = Route(200, body)
            assert driver.poll() == [], body
        site.routes["/d"] = Route(200, b'{"a": {"t": -4.25}}')
        assert driver.poll() == [{"t": -4.25}]
    assert dict(driver.rejected) == {
        "body is not JSON": 2,
        "not a JSON object but an array": 1,
        "no 'a.t' in the document": 1,
        "'a.t' is null, not a number, boolean or string": 1,
        "'a.t' is out of the 64-bit integer range": 1,
    }


def test_unreachable_or_stalled_server_raises(server: _Server) -> None:
    config = {"url": server.url("/stall"), "timeout_ms": 250}
    with open_driver("http_poll", config) as driver, pytest.raises(httpx.TimeoutException):
        driver.poll()
    host, port = server.server_address[:2]
    server.shutdown()
    server.server_close()  # nothing listens on the port any more
    config = {"url": f"http://{host!s}:{port}/"}
    with open_driver("http_poll", config) as driver, pytest.raises(httpx.ConnectError):
        driver.poll()
