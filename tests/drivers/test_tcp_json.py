"""The tcp_json driver against a real TCP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import queue
import socket
import socketserver
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pilog import runtime as runtime_mod
from pilog.config import parse_config
from pilog.datadir import EventLog
from pilog.drivers.base import Payload, PollingDriver
from pilog.events import DriverFailed, Reading
from pilog.history import History
from pilog.runtime import Runtime
from pilog.testing.clock import FakeClock
from pilog.testing.drivers import open_driver

WAIT_S = 30.0  # a bound for waiting on the server, never a measured result


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections: queue.Queue[Connection] = queue.Queue()
        self.stopping = threading.Event()
        self.on_connect: Callable[[Connection, int], None] | None = None  # (conn, number)
        self.accepted = 0


class Connection:
    """The server's end of one accepted connection: the test writes lines and hangs up."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.done = threading.Event()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def drop(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.done.set()


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        conn = Connection(self.request)
        self.server.accepted += 1
        if self.server.on_connect is not None:
            self.server.on_connect(conn, self.server.accepted)
        self.server.connections.put(conn)
        # socketserver closes the socket when handle returns: hold it until the test drops it.
        while not conn.done.wait(0.05) and not self.server.stopping.is_set():
            pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stopping.set()
        srv.shutdown()
        srv.server_close()
        thread.join(WAIT_S)


def options(srv: _Server, **extra: Any) -> dict[str, Any]:
    host, port = srv.server_address[:2]
    return {"host": host, "port": port, **extra}


def accepted(srv: _Server) -> Connection:
    return srv.connections.get(timeout=WAIT_S)


def read_until(driver: PollingDriver, count: int) -> list[Payload]:
    """Read until `count` readings came (or the wait bound passed)."""
    out: list[Payload] = []
    deadline = time.monotonic() + WAIT_S
    while len(out) < count and time.monotonic() < deadline:
        out.extend(driver.poll())
    return out


def poll_until_error(driver: PollingDriver) -> None:
    """Poll until the driver raises; fail if it has not within the wait bound."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert driver.poll() == []
    pytest.fail(f"no error within {WAIT_S} s")


def test_each_line_is_a_reading_of_its_scalar_values(server: _Server) -> None:
    with open_driver("tcp_json", options(server)) as driver:
        conn = accepted(server)
        conn.send(b'{"temp_c": 21.5, "rh_pct": 40, "ok": true, "id": "a1", "nested": {"x": 1}')
        assert driver.poll() == []  # half a line: nothing yet
        conn.send(b', "none": null}\r\n\n{"temp_c": -3}\n')
        assert read_until(driver, 2) == [
            {"temp_c": 21.5, "rh_pct": 40, "ok": True, "id": "a1"},
            {"temp_c": -3},
        ]
        assert sum(driver.rejected.values()) == 0


def test_fields_mapping_and_selection_use_dotted_paths(server: _Server) -> None:
    line = b'{"t": 20.25, "soil": {"moisture_pct": 31}, "probes": [{"t": 4.5}], "x": 9}\n'
    mapping = {"temperature_c": "t", "soil_pct": "soil.moisture_pct", "probe_c": "probes.0.t"}
    with open_driver("tcp_json", options(server, fields=mapping)) as driver:
        accepted(server).send(line)
        assert read_until(driver, 1) == [{"temperature_c": 20.25, "soil_pct": 31, "probe_c": 4.5}]
    with open_driver("tcp_json", options(server, fields=["t", "soil.moisture_pct"])) as driver:
        accepted(server).send(line)
        assert read_until(driver, 1) == [{"t": 20.25, "soil_moisture_pct": 31}]


def test_malformed_lines_are_rejected_and_reading_goes_on(server: _Server) -> None:
    with open_driver("tcp_json", options(server, fields={"t": "t"})) as driver:
        conn = accepted(server)
        conn.send(
            b'{"t": 1\n'  # truncated object
            b"garbage \xff\xfe\n"
            b"[1, 2]\n"
            b'{"u": 2}\n'
            b'{"t": {"deep": 1}}\n'
            b'{"t": 99999999999999999999}\n'
            b'{"t": 1e999}\n'
            b"NaN\n"
            b'{"t": 7}\n'
        )
        assert read_until(driver, 1) == [{"t": 7}]
        # 1e999 is refused as the JSON grammar does; a bare NaN is read (old Tasmota prints
        # one for a failed sensor), but it is not an object.
        assert driver.rejected["line is not valid JSON"] == 3
        assert driver.rejected["not a JSON object but float"] == 1
        assert driver.rejected["not a JSON object but an array"] == 1
        assert driver.rejected["no 't' in the document"] == 1
        assert driver.rejected["'t' is an object, not a number, boolean or string"] == 1
        assert driver.rejected["'t' is out of the 64-bit integer range"] == 1
        assert sum(driver.rejected.values()) == 8


def test_bare_nan_drops_that_value_and_keys_become_field_names(server: _Server) -> None:
    # Old Tasmota firmware prints a failed sensor read as a bare nan (arendst/Tasmota#4147).
    lines = (
        b'{"Time":"2018-10-23T23:47:58","DHT11":{"Temperature":nan,"Humidity":nan},'
        b'"BH1750":{"Illuminance":212},"TempUnit":"C"}\n'
        b'{"Temp \xc2\xb0C": 21.5, "PM2.5": 3, "W\xc3\xa4rme": -inf, "Note": "nan inf"}\n'
    )
    fields = ["DHT11.Temperature", "DHT11.Humidity", "BH1750.Illuminance"]
    with (
        open_driver("tcp_json", options(server, fields=fields)) as paths,
        open_driver("tcp_json", options(server)) as every,
    ):
        for _ in range(2):
            accepted(server).send(lines)
        assert read_until(paths, 1) == [{"bh1750_illuminance": 212}]
        assert read_until(every, 2) == [
            {"time": "2018-10-23T23:47:58", "tempunit": "C"},
            {"temp_c": 21.5, "pm2_5": 3, "note": "nan inf"},
        ]
    assert paths.rejected == {
        "'DHT11.Temperature' is not a finite number: that value is left out": 1,
        "'DHT11.Humidity' is not a finite number: that value is left out": 1,
        "no 'DHT11.Temperature' in the document": 1,  # the second line is another device
    }
    assert every.rejected == {"'Wärme' is not a finite number: that value is left out": 1}


def test_optional_fields_are_taken_when_present(server: _Server) -> None:
    config = options(
        server, fields={"t_c": "t"}, optional_fields=['soil."moisture.pct"', "battery_v"]
    )
    with open_driver("tcp_json", config) as driver:
        accepted(server).send(
            b'{"t": 1, "soil": {"moisture.pct": 31}, "battery_v": null}\n'
            b'{"t": 2, "battery_v": 3.7}\n{"battery_v": 3.6}\n{"t": 3}\n'
        )
        assert read_until(driver, 3) == [
            {"t_c": 1, "soil_moisture_pct": 31},
            {"t_c": 2, "battery_v": 3.7},
            {"t_c": 3},
        ]
    assert driver.rejected == {"no 't' in the document": 1}


def test_overlong_line_is_rejected(server: _Server) -> None:
    with open_driver("tcp_json", options(server, max_line_bytes=64)) as driver:
        conn = accepted(server)
        conn.send(b'{"pad": "' + b"x" * 200 + b'"}\n{"t": 1}\n')
        assert read_until(driver, 1) == [{"t": 1}]
        assert driver.rejected["line longer than 64 bytes"] == 1


def test_dropped_connection_raises_and_a_reopen_reconnects(server: _Server) -> None:
    with open_driver("tcp_json", options(server)) as driver:
        conn = accepted(server)
        conn.send(b'{"n": 1}\n{"n": 2')  # the second line is cut by the drop
        assert read_until(driver, 1) == [{"n": 1}]
        conn.drop()
        with pytest.raises(ConnectionError, match="closed by the peer"):
            poll_until_error(driver)
    # What the runtime does after the raise: a new driver, opened again.
    with open_driver("tcp_json", options(server)) as driver:
        accepted(server).send(b'{"n": 3}\n')
        assert read_until(driver, 1) == [{"n": 3}]


def test_refused_connection_raises_on_open() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connecting is refused
        with pytest.raises(ConnectionRefusedError):  # noqa: SIM117
            with open_driver("tcp_json", {"host": "127.0.0.1", "port": port}):
                pass


def test_runtime_reconnects_after_the_server_drops_the_connection(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_mod, "RESTART_BACKOFF_MIN_S", 0.02)

    def serve(conn: Connection, number: int) -> None:
        conn.send(b'{"conn": %d}\n' % number)
        if number == 1:
            conn.drop()

    server.on_connect = serve
    host, port = server.server_address[:2]
    config = parse_config(
        tomllib.loads(
            f"""
            device_id = "t"
            data_dir = "{tmp_path}"
            [log]
            fsync = "never"
            [[sensor]]
            name = "gw"
            driver = "tcp_json"
            host = "{host!s}"
            port = {port}
            """
        ),
        "test.toml",
        {},
    )
    clock = FakeClock()
    events = EventLog(config, clock=clock)
    rt = Runtime(config, events, clock)

    async def main() -> None:
        task = asyncio.create_task(rt.run())
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            health = rt.health.get("gw")
            if health is not None and health.readings >= 2:
                break
            await asyncio.sleep(0.01)
        rt.stop()
        await task

    try:
        asyncio.run(main())
    finally:
        events.close()
    bodies = [e.body for e in History(config.data_dir).events(0)]
    readings = [b.values for b in bodies if isinstance(b, Reading) and b.sensor == "gw"]
    assert readings[:2] == [{"conn": 1}, {"conn": 2}]
    failed = [b for b in bodies if isinstance(b, DriverFailed) and b.sensor == "gw"]
    assert "connection closed by the peer" in failed[0].error
    assert server.accepted >= 2
