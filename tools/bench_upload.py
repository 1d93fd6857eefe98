"""One pilog uploading a backlog into a local engine: readings/s, and whose CPU it costs.

Issue 14 ("Fleet shape"): one pilog's upload rate to a local engine, at least 100,000
readings/s on a backlog. Run from the repository root:

    .venv/bin/python tools/bench_upload.py               # 300k readings, 3 runs per row
    .venv/bin/python tools/bench_upload.py --quick       # a smoke run

One backlog per run of the benchmark: 8 sensors of 3 float fields each (as
tools/bench_consumers.py has them), one reading per sensor per millisecond, so each reading
is a point of its own in VictoriaMetrics and the engine's count of points checks delivery.
Each row opens a fresh copy in a fresh subprocess, starts the consumer group with one sink,
and times start → cursor at the end of the log. Rows, interleaved and rotated each run,
medians reported:

    A   ceiling: the consumer's read + decode alone (`History.events`), no sink
    H*  `http-json` to `python -m pilog.testing.receiver` (another process)
    V*  `influx-line` (api v1, `/write`) to VictoriaMetrics (Debian's `victoria-metrics`)
    *0  the previous code path, in the same run: the per-event batching loop, a dict per
        reading, gzip level 5, and for H0 the receiver checking every object in Python
        (`--python-checks`); the other rows run the code as it is

Figures: readings/s acknowledged by the engine, pilog's CPU s per 100k readings (the whole
child process: uploader thread, log writer, the poller reading the cursor every 20 ms), and
the engine's CPU s per 100k over the same window (from /proc/PID/stat). The uploader sends
one request at a time and waits for its answer, so elapsed ≈ pilog CPU + engine CPU while
both have a core.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from bench_consumers import (
    DEVICE_ID,
    NO_BOUND_BYTES,
    SENSORS,
    ReceiverProc,
    cpu_s,
    fresh_copy,
    make_config,
    peak_rss,
    reading,
    wait_cursors,
)
from rich import box
from rich.console import Console
from rich.table import Table

from pilog.config import Config, parse_config
from pilog.consumers import ConsumerGroup
from pilog.datadir import EventLog
from pilog.events import Event, Reading
from pilog.history import History
from pilog.testing.clock import FakeClock

CATCH_UP_TIMEOUT_S = 600.0
START_TIMEOUT_S = 30.0
VISIBLE_TIMEOUT_S = 10.0  # for VictoriaMetrics to show every point it acknowledged
PER = 100_000  # CPU figures are per this many readings
FIELDS = 3  # per reading of the backlog: each is a series point in VictoriaMetrics


# -- the backlog ---------------------------------------------------------------------------

STEP_NS = 1_000_000  # between rounds of one reading per sensor: VictoriaMetrics keeps ms


def build_backlog(data_dir: Path, n: int) -> dict[str, Any]:
    """`n` readings, one per sensor per round, each round 1 ms after the one before: every
    reading is its own point in each of its series, so an engine's point count checks it."""
    rounds = -(-n // SENSORS)
    clock = FakeClock(time.time_ns() - rounds * STEP_NS, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
    events = EventLog(make_config(data_dir), clock=clock)
    try:
        for start in range(0, n, SENSORS):
            events.append_many([reading(i) for i in range(start, min(n, start + SENSORS))])
            clock.advance(STEP_NS)
    finally:
        events.close()
    segments = sorted((data_dir / "log").iterdir())
    return {"events": n, "segments": len(segments),
            "disk_bytes": sum(p.stat().st_size for p in segments)}  # fmt: skip


# -- the child: one row, in its own process ----------------------------------------------


def config_text(data_dir: Path, args: argparse.Namespace) -> str:
    lines = [
        f'device_id = "{DEVICE_ID}"',
        f'data_dir = "{data_dir}"',
        "[log]",
        f"max_bytes = {NO_BOUND_BYTES}",
        "[[sink]]",
        'name = "up"',
        f'type = "{args.sink}"',
        f'url = "{args.url}"',
        f"batch_max = {args.batch_max}",
        f"gzip = {'true' if args.gzip else 'false'}",
    ]
    if args.sink == "influx-line":
        lines += ['api = "v1"', 'database = "pilog"']
    return "\n".join(lines) + "\n"


def use_previous_path() -> None:
    """Put back the uploader path as it was before issue 14's work, for the *0 rows."""
    from pilog.testing import encoders
    from pilog.uploader import http, loop
    from pilog.uploader.sinks.http_json import sink as http_json
    from pilog.uploader.sinks.influx_line import sink as influx_line

    http.GZIP_LEVEL = 5

    def handle(self: loop.Uploader, events: Sequence[Event]) -> None:
        for e in events:
            body = e.body
            if isinstance(body, Reading):
                if not self._pending:
                    self._first_at = time.monotonic()
                self._pending.append(e)
                self._pending_bytes += loop._stored_size(body)
            self._upto = e.seq + 1
            if (
                len(self._pending) >= self.config.batch_max
                or self._pending_bytes >= self.config.batch_max_bytes
            ):
                self.flush()

    def send(self: http_json.HttpJsonSink, batch: Sequence[Event]) -> Any:
        body = encoders.http_json_body(self.context, batch)
        body, extra = http.encode_body(body, self.options.gzip)
        headers = {**self._headers, **extra, "Idempotency-Key": self.context.idempotency_key(batch)}
        return http.post(self._client, self.options.url, body, headers, self._secrets)

    def flush(self: loop.Uploader) -> None:
        if self._pending:
            self._deliver(self._pending)
        self._pending = []
        self._pending_bytes = 0
        self._delivered = self._upto
        self.state.position = self._upto
        if time.monotonic() - self._committed_at >= self._commit_every_s:
            self._commit(self._upto)

    loop.Uploader.handle = handle  # type: ignore[method-assign]
    loop.Uploader.flush = flush  # type: ignore[method-assign]
    http_json.HttpJsonSink.send = send  # type: ignore[method-assign]
    del http_json.HttpJsonSink.prepare  # encoded in `send`, after the batch before is acked
    del influx_line.InfluxLineSink.prepare
    influx_line.encode_batch = encoders.line_batch


def child_group(config: Config) -> dict[str, Any]:
    events = EventLog(config)
    try:
        end = events.writer.next_seq
        group = ConsumerGroup.open(config, events)
        names = [c.name for c in group.consumers]
        c0, t0 = cpu_s(), time.perf_counter()
        group.start()
        done = wait_cursors(events, names, end, CATCH_UP_TIMEOUT_S)
        out: dict[str, Any] = {"elapsed_s": time.perf_counter() - t0, "cpu_s": cpu_s() - c0}
        out["caught_up"] = done
        out["readings"] = sum(c.state.delivered for c in group.consumers)
        out["requests"] = sum(c.state.requests for c in group.consumers)
        group.stop(5)
        return out
    finally:
        events.close()


def child_replay(data_dir: Path) -> dict[str, Any]:
    c0, t0 = cpu_s(), time.perf_counter()
    readings = 0
    for event in History(data_dir).events(0):
        readings += isinstance(event.body, Reading)
    return {"readings": readings, "elapsed_s": time.perf_counter() - t0, "cpu_s": cpu_s() - c0}


def child_main(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if args.child == "replay":
        out = child_replay(data)
    else:
        if args.previous:
            use_previous_path()
        text = config_text(data, args)
        out = child_group(parse_config(tomllib.loads(text), "bench", {}))
    out.update(peak_rss())
    print(json.dumps(out), flush=True)
    return 0


# -- engines -------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Receiver:
    """The Python receiver of the http-json contract, in its own process."""

    def __init__(self, python_checks: bool) -> None:
        self._proc = ReceiverProc(*(["--python-checks"] if python_checks else []))
        self.url = self._proc.url
        self.pid = self._proc.proc.pid

    def close(self) -> dict[str, Any]:
        return self._proc.close()


class VictoriaMetrics:
    """`victoria-metrics` on a free port of 127.0.0.1, storing under `home`."""

    def __init__(self, binary: str, home: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        args = [
            binary,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={home / 'vm-data'}",
            "-loggerLevel=ERROR",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",  # the backlog's newest points are seconds old
        ]
        self._log = (home / "victoria-metrics.log").open("wb")
        self._proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self._proc.pid
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(trust_env=False) as client:
            while True:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"victoria-metrics did not start; see {home}")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.05)

    def series_points(self, expected: int) -> int:
        """Points stored (each reading has `FIELDS`, each in its own series), polled until
        `expected` or a few seconds: ingested points take a moment to become searchable."""
        deadline = time.monotonic() + VISIBLE_TIMEOUT_S
        with httpx.Client(trust_env=False, timeout=60) as client:
            while True:
                client.get(f"{self.url}/internal/force_flush")
                answer = client.get(
                    f"{self.url}/api/v1/export",
                    params={"match[]": f'{{device="{DEVICE_ID}"}}', "reduce_mem_usage": "1"},
                )
                lines = answer.text.splitlines()
                points = sum(len(json.loads(line)["values"]) for line in lines)
                if points >= expected or time.monotonic() > deadline:
                    return points
                time.sleep(0.2)

    def close(self) -> dict[str, Any]:
        self._proc.terminate()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()
        return {}


# -- the parent: rows, runs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    engine: str  # "" (row A) | receiver | vm
    batch_max: int = 1000
    gzip: bool = True
    previous: bool = False


ROWS = (
    Row("A", "ceiling: read + decode only, no sink", ""),
    Row("H0", "http-json → receiver, batch 1000, gzip, previous", "receiver", previous=True),
    Row("H1", "http-json → receiver, batch 1000, gzip", "receiver"),
    Row("H2", "http-json → receiver, batch 1000, no gzip", "receiver", gzip=False),
    Row("H3", "http-json → receiver, batch 5000, gzip", "receiver", 5000),
    Row("V0", "influx-line → VictoriaMetrics, batch 1000, gzip, previous", "vm", previous=True),
    Row("V1", "influx-line → VictoriaMetrics, batch 1000, gzip", "vm"),
    Row("V2", "influx-line → VictoriaMetrics, batch 1000, no gzip", "vm", gzip=False),
    Row("V3", "influx-line → VictoriaMetrics, batch 5000, gzip", "vm", 5000),
)


def run_row(row: Row, backlog: Path, work: Path, vm_binary: str | None) -> dict[str, Any]:
    data = fresh_copy(backlog, work)
    engine: Receiver | VictoriaMetrics | None = None
    try:
        cmd = [sys.executable, __file__, "--data", str(data)]
        if row.engine == "":
            cmd += ["--child", "replay"]
        else:
            if row.engine == "receiver":
                engine = Receiver(python_checks=row.previous)
                cmd += ["--child", "group", "--sink", "http-json"]
            else:
                assert vm_binary is not None
                engine = VictoriaMetrics(vm_binary, data.parent)
                cmd += ["--child", "group", "--sink", "influx-line"]
            cmd += ["--url", engine.url, "--batch-max", str(row.batch_max)]
            cmd += [] if row.gzip else ["--no-gzip"]
            cmd += ["--previous"] if row.previous else []
        e0 = proc_cpu_s(engine.pid) if engine is not None else 0.0
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"row {row.key} exited {done.returncode}: {done.stderr[-2000:]}")
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if isinstance(engine, Receiver):
            out["engine_cpu_s"] = proc_cpu_s(engine.pid) - e0
            out["stored"] = engine.close().get("unique", -1)
            engine = None
        elif isinstance(engine, VictoriaMetrics):
            out["engine_cpu_s"] = proc_cpu_s(engine.pid) - e0
            out["stored"] = engine.series_points(FIELDS * out["readings"]) // FIELDS
        return out
    finally:
        if engine is not None:
            engine.close()
        shutil.rmtree(data.parent, ignore_errors=True)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def print_rows(
    console: Console, rows: list[Row], results: dict[str, list[dict[str, Any]]], n: int
) -> None:
    t = Table(
        title=f"one pilog uploading a backlog of {n:,} readings: medians of interleaved runs",
        box=box.SIMPLE_HEAVY,
    )
    cols = ("row", "what", "readings/s", "min..max", "vs *0", "pilog CPU s/100k",
            "engine CPU s/100k", "s", "stored", "peak RSS MiB", "runs")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col in ("row", "what") else "right")
    rates = {k: [r["readings"] / r["elapsed_s"] for r in rs] for k, rs in results.items()}
    for row in rows:
        rs = results[row.key]
        base = rates.get(row.key[0] + "0") if row.engine else None
        rx = [PER * r["engine_cpu_s"] / r["readings"] for r in rs if "engine_cpu_s" in r]
        stored = {r.get("stored", r["readings"]) - r["readings"] for r in rs}
        t.add_row(
            row.key,
            row.label,
            f"{med(rates[row.key]):,.0f}",
            f"{min(rates[row.key]):,.0f}..{max(rates[row.key]):,.0f}",
            f"{med(rates[row.key]) / med(base):.2f}" if base else "-",
            f"{med([PER * r['cpu_s'] / r['readings'] for r in rs]):.3f}",
            f"{med(rx):.3f}" if rx else "-",
            f"{med([r['elapsed_s'] for r in rs]):.2f}",
            "all" if stored == {0} else f"off by {sorted(stored)}",
            f"{med([r['hwm_mib'] for r in rs]):.1f}",
            str(len(rs)),
        )
    console.print(t)
    for key, rs in results.items():
        for r in rs:
            if not r.get("caught_up", True):
                console.print(f"[red]{key} did not catch up within {CATCH_UP_TIMEOUT_S:g} s[/]")


def gzip_figures(console: Console) -> None:
    """What gzip levels cost and give on one batch of the backlog's JSON."""
    from pilog.uploader.sink import SinkContext

    ctx = SinkContext(DEVICE_ID, "ab" * 16, Path("."))
    from bench_consumers import reading

    batch = [
        Event(i, 1_764_800_000_000_000_000 + i * 10**8, i, b"", reading(i)) for i in range(1000)
    ]
    import msgspec

    body = msgspec.json.encode(ctx.wire_readings(batch))
    parts = []
    for level in (1, 5, 6, 9):
        t0 = time.perf_counter()
        for _ in range(20):
            z = gzip.compress(body, level, mtime=0)
        us = (time.perf_counter() - t0) / 20 / 1000 * 1e6
        parts.append(f"level {level}: {len(body) / len(z):.1f}x, {us:.1f} µs/reading")
    console.print(
        f"gzip on a batch of 1000 readings ({len(body) // 1000} B each): " + "; ".join(parts)
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--events", type=int, help="readings in the backlog (default 300000)")
    p.add_argument("--runs", type=int, help="runs per row, interleaved (default 3)")
    p.add_argument("--rows", help="comma-separated row keys (default: all)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 50k readings, 1 run")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the work dir")
    # The child's side (internal).
    p.add_argument("--child", choices=("replay", "group"), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--sink", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--batch-max", type=int, default=1000, help=argparse.SUPPRESS)
    p.add_argument("--no-gzip", dest="gzip", action="store_false", help=argparse.SUPPRESS)
    p.add_argument("--previous", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.events is None:
        args.events = 50_000 if args.quick else 300_000
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    return args


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    console = Console(width=170, highlight=False)
    u = platform.uname()
    console.print(f"[bold]pilog upload benchmark[/] {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
    console.print(
        f"machine: {u.system} {u.release} {u.machine}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load avg {load()}"
    )
    vm_binary = shutil.which("victoria-metrics")
    rows = list(ROWS)
    if args.rows:
        keys = args.rows.split(",")
        rows = [r for r in rows if r.key in keys]
    if vm_binary is None:
        console.print(
            "[yellow]victoria-metrics not found (apt install victoria-metrics): no V rows[/]"
        )
        rows = [r for r in rows if r.engine != "vm"]
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pilog-bench-upload-", dir=args.dir))
    try:
        print(f"... building a backlog of {args.events:,} readings", file=sys.stderr, flush=True)
        backlog = work / "backlog" / "data"
        info = build_backlog(backlog, args.events)
        console.print(
            f"backlog of {info['events']:,} readings: {info['segments']} segments, "
            f"{info['disk_bytes'] / (1 << 20):.1f} MiB"
        )
        results: dict[str, list[dict[str, Any]]] = {r.key: [] for r in rows}
        for run in range(args.runs):  # interleaved, the order rotated each run
            order = rows[run % len(rows) :] + rows[: run % len(rows)]
            for row in order:
                print(f"... run {run + 1}/{args.runs}: {row.key}", file=sys.stderr, flush=True)
                results[row.key].append(run_row(row, backlog, work, vm_binary))
        print_rows(console, rows, results, args.events)
        gzip_figures(console)
        console.print(f"load avg at the end: {load()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
