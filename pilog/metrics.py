"""`/metrics`: the running process's counters in the Prometheus text format (version 0.0.4).

Off unless `[metrics] listen = "HOST:PORT"`. Every family is present from the start, zero
until something happens, so dashboards and alerts never see a series appear from nowhere.
Values come from one `RunSnapshot` taken at scrape time (`pilog.runstate`), the same snapshot
`pilog status` shows over the control socket, so the two agree on every number.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pilog.log.writer import SYNC_SECONDS_BUCKETS
from pilog.runstate import ConsumerView, DriverView, RunSnapshot, WriterView

log = logging.getLogger("pilog.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[str, dict[str, str], float]  # name (with suffix), labels, value


class Family:
    """One metric family: HELP, TYPE and its samples."""

    def __init__(self, name: str, kind: str, help_: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_
        self.samples: list[Sample] = []

    def add(self, value: float, suffix: str = "", **labels: str) -> Family:
        self.samples.append((self.name + suffix, labels, value))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [f"{n}{_labels(lab)} {_number(v)}" for n, lab, v in self.samples]
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    esc = {
        k: v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        for k, v in labels.items()
    }
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


def _number(v: float) -> str:
    if v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


def collect(snap: RunSnapshot) -> list[Family]:
    """Every family, from one snapshot of `pilog run` (the one `pilog status` also shows)."""
    w = snap.writer
    fams = [
        Family("pilog_appends_total", "counter", "Events appended since start.").add(w.appended),
        Family("pilog_durable_seq", "gauge", "Highest seq that is durable.").add(w.durable_seq),
        Family("pilog_bytes_written_total", "counter", "Frame bytes written to segments.").add(
            w.bytes_written
        ),
        _sync_histogram(w),
        Family("pilog_log_bytes", "gauge", "Bytes of the segments on disk.").add(w.log_bytes),
        Family("pilog_log_max_bytes", "gauge", "The log's cap (max_bytes).").add(w.max_bytes),
        Family(
            "pilog_log_full", "gauge", "1 while appends are refused (full, or disk stalled)."
        ).add(int(w.refusing)),
        Family("pilog_log_io_error", "gauge", "1 while the disk refuses writes (retried).").add(
            int(w.io_error is not None)
        ),
        Family("pilog_repairs_total", "counter", "Torn tails cut on open (repair events).").add(
            snap.repairs
        ),
        Family("pilog_gaps_total", "counter", "Losses recorded as gap events.").add(snap.gaps),
        Family("pilog_clock_steps_total", "counter", "Wall-clock steps seen since start.").add(
            snap.clock.steps
        ),
    ]
    fams += _driver_families(snap.drivers)
    fams += _consumer_families(snap.consumers, snap.wall_ns)
    return fams


def _sync_histogram(w: WriterView) -> Family:
    fam = Family("pilog_fsync_seconds", "histogram", "Time fdatasync of a segment took.")
    cumulative = 0
    for bound, n in zip(SYNC_SECONDS_BUCKETS, w.sync_buckets, strict=True):
        cumulative += n
        fam.add(cumulative, "_bucket", le=repr(bound))
    fam.add(w.syncs, "_bucket", le="+Inf")
    fam.add(w.sync_seconds_sum, "_sum")
    return fam.add(w.syncs, "_count")


def _driver_families(drivers: Iterable[DriverView]) -> list[Family]:
    readings = Family("pilog_driver_readings_total", "counter", "Readings a sensor produced.")
    errors = Family("pilog_driver_errors_total", "counter", "Failures of a sensor's driver.")
    dropped = Family(
        "pilog_driver_dropped_total", "counter", "Readings refused by a full log at the source."
    )
    up = Family("pilog_driver_up", "gauge", "1 while the sensor's driver runs without failing.")
    for h in drivers:
        readings.add(h.readings, sensor=h.sensor)
        errors.add(h.failures, sensor=h.sensor)
        dropped.add(h.dropped, sensor=h.sensor)
        up.add(int(h.state == "running"), sensor=h.sensor)
    return [readings, errors, dropped, up]


def _consumer_families(consumers: list[ConsumerView], wall_ns: int) -> list[Family]:
    lag = Family("pilog_consumer_lag_events", "gauge", "Durable events a consumer has not handled.")
    age = Family(
        "pilog_consumer_lag_seconds",
        "gauge",
        "Age of the oldest durable event a consumer has not handled (0 when caught up).",
    )
    handled = Family(
        "pilog_consumer_delivered_total", "counter", "Readings acknowledged or events applied."
    )
    retries = Family("pilog_consumer_retries_total", "counter", "Failed sends since start.")
    dead = Family("pilog_dead_letters_total", "counter", "Readings a sink refused for good.")
    paused = Family(
        "pilog_consumer_paused",
        "gauge",
        "1 while a consumer is paused until the operator acts; `reason` says on what.",
    )
    retry_at = Family(
        "pilog_consumer_next_retry_timestamp_seconds",
        "gauge",
        "When a waiting consumer sends again (Unix time; 0 when it is not waiting).",
    )
    for c in consumers:
        name = c.name
        lag.add(c.lag_events, consumer=name)
        age.add(max(0, wall_ns - c.oldest_ns) / 1e9 if c.oldest_ns else 0, consumer=name)
        handled.add(c.delivered, consumer=name)
        retries.add(c.retries, consumer=name)
        dead.add(c.dead_letters, consumer=name)
        is_paused = c.state == "paused"
        reason = (c.paused_reason or "other") if is_paused else ""
        paused.add(int(is_paused), consumer=name, reason=reason)
        retry_at.add(c.retry_at_ns / 1e9 if c.retry_at_ns else 0, consumer=name)
    return [lag, age, handled, retries, dead, paused, retry_at]


class MetricsServer:
    """Serves `render()` on GET /metrics from a daemon thread until `close`."""

    def __init__(self, address: tuple[str, int], render: Callable[[], str]) -> None:
        handler = _handler(render)
        self._server = ThreadingHTTPServer(address, handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(render: Callable[[], str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self._send(404, b"see /metrics\n", "text/plain")
                return
            try:
                body = render().encode()
            except Exception as e:
                log.exception("rendering /metrics failed")
                self._send(500, f"{type(e).__name__}: {e}\n".encode(), "text/plain")
                return
            self._send(200, body, CONTENT_TYPE)

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would flood the journal

    return Handler


def render(families: Iterable[Family]) -> str:
    return "".join(f.render() for f in families)


def render_snapshot(snap: RunSnapshot) -> str:
    """The /metrics page of one snapshot."""
    return render(collect(snap))
