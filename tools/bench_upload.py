"""One pilog uploading a backlog into a local engine: readings/s, and whose CPU it costs.

Issue 14 ("Fleet shape"): one pilog's upload rate to a local engine, at least 100,000
readings/s on a backlog. Run from the repository root:

    .venv/bin/python tools/bench_upload.py               # 300k readings, 3 runs per row
    .venv/bin/python tools/bench_upload.py --quick       # a smoke run
    .venv/bin/python tools/bench_upload.py --rows A,N1,P1  # some rows

One backlog per run of the benchmark: 8 sensors of 3 float fields each (as
tools/bench_consumers.py has them), one reading per sensor per millisecond, so each reading
is a point of its own in VictoriaMetrics and the engine's count of points checks delivery.
Each row opens a fresh copy in a fresh subprocess, starts the consumer group with one sink,
and times start → cursor at the end of the log. Every row but A gets an engine of its own,
started before and stopped after it. Rows, interleaved and rotated each run, medians reported:

    A   ceiling: the consumer's read + decode alone (`History.events`), no sink
    H*  `http-json` to `python -m pilog.testing.receiver` (another process)
    V*  `influx-line` (api v1, `/write`) to VictoriaMetrics (Debian's `victoria-metrics`)
    *0  the previous code path, in the same run: the per-event batching loop, a dict per
        reading, gzip level 5, and for H0 the receiver checking every object in Python
        (`--python-checks`); the other rows run the code as it is
    N1  `nats` to a 3-node JetStream cluster (`pilog.testing.nats`, Debian's `nats-server`),
        stream BENCH on `bench.>` with 3 replicas, subject `bench.{device_id}`
    N2  the same to a single JetStream server (1 replica)
    P1  `postgres` to a PostgreSQL server (`pilog.testing.postgres`, Debian's `postgresql`;
        fsync off, as in the tests), the sink's own table; P2 with batches of 5000

Rows whose engine is not installed are left out, with one line saying why.

Figures: readings/s acknowledged by the engine, pilog's CPU s per 100k readings (the whole
child process: uploader and sender threads, log writer, the poller reading the cursor every
20 ms), and the engine's CPU s per 100k over the same window, from /proc/PID/stat: the
receiver's or VictoriaMetrics' process, the sum over the nats-server processes, and for
PostgreSQL the postmaster with its children (backends, WAL writer, checkpointer...) plus what
the postmaster has reaped of children gone meanwhile (the sink's backend once it hangs up).
"stored" checks the engine holds every reading: the receiver's unique count, VictoriaMetrics'
points / 3, the stream's message count, `count(*)` of the table.

The uploader keeps one batch in flight (docs/sinks.md, "Throughput on a backlog"): a sender
thread posts batch n and waits for its answer while batch n+1 is read and encoded. So with a
core each, elapsed ≈ the larger of pilog's CPU and the engine's, plus a cost per batch (the
round trip, the cursor's save in the index), and bigger batches go faster. Without a free core
each (the machine shared), the two overlap less and elapsed tends to their sum.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
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
from typing import Any, Protocol

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
from pilog.testing import nats as nats_server
from pilog.testing import postgres as pg_server
from pilog.testing.clock import FakeClock
from pilog.testing.nats import NatsCluster
from pilog.testing.postgres import PostgresServer

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


HTTP_SINKS = ("http-json", "influx-line")  # `gzip` is an option of these only


def config_text(data_dir: Path, args: argparse.Namespace) -> str:
    """The child's pilog.toml: the backlog's data dir, one sink with the engine's options."""
    lines = [
        f'device_id = "{DEVICE_ID}"',
        f'data_dir = "{data_dir}"',
        "[log]",
        f"max_bytes = {NO_BOUND_BYTES}",
        "[[sink]]",
        'name = "up"',
        f'type = "{args.sink}"',
        f"batch_max = {args.batch_max}",
    ]
    for option in args.option:
        key, _, value = option.partition("=")
        lines.append(f"{key} = {json.dumps(value)}")  # a JSON string is a TOML basic string
    if args.sink in HTTP_SINKS:
        lines.append(f"gzip = {'true' if args.gzip else 'false'}")
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


CLK_TCK = os.sysconf("SC_CLK_TCK")
VM_BINARY = shutil.which("victoria-metrics")
NATS_STREAM = "BENCH"
PG_USER, PG_PASSWORD, PG_DATABASE = "bench", "bench-pw", "bench"
PG_TABLE = "pilog_readings"  # the postgres sink's default


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name: [0] is field 3 (state), [1] ppid,
    [11] utime, [12] stime, [13] cutime, [14] cstime (proc(5)), times in clock ticks."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def proc_cpu_s(pid: int) -> float:
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Engine(Protocol):
    """A local engine one row uploads to: running once made, until `close`.

    `sink` and `options` are the row's `[[sink]]` type and its own keys. `cpu_s` is the CPU
    time all the engine's processes have used so far. `stored` is called once, after the
    child has exited: how many readings the engine holds (`readings` were acknowledged).
    `close` stops it and may be called again."""

    sink: str
    options: dict[str, str]

    def cpu_s(self) -> float: ...

    def stored(self, readings: int) -> int: ...

    def close(self) -> None: ...


class Receiver:
    """The Python receiver of the http-json contract, in its own process."""

    sink = "http-json"

    def __init__(self, python_checks: bool) -> None:
        self._proc = ReceiverProc(*(["--python-checks"] if python_checks else []))
        self.options = {"url": self._proc.url}
        self._stats: dict[str, Any] | None = None

    def cpu_s(self) -> float:
        return proc_cpu_s(self._proc.proc.pid)

    def stored(self, readings: int) -> int:
        self.close()
        return int((self._stats or {}).get("unique", -1))

    def close(self) -> None:
        if self._stats is None:
            self._stats = self._proc.close()  # its counts, printed on its way out


class VictoriaMetrics:
    """`victoria-metrics` on a free port of 127.0.0.1, storing under `home`."""

    sink = "influx-line"

    def __init__(self, home: Path) -> None:
        assert VM_BINARY is not None, "victoria-metrics is not installed"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.options = {"url": self.url, "api": "v1", "database": "pilog"}
        args = [
            VM_BINARY,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={home / 'vm-data'}",
            "-loggerLevel=ERROR",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",  # the backlog's newest points are seconds old
        ]
        self._log = (home / "victoria-metrics.log").open("wb")
        self._proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
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

    def cpu_s(self) -> float:
        return proc_cpu_s(self._proc.pid)

    def stored(self, readings: int) -> int:
        """Points stored (each reading has `FIELDS`, each in its own series) / `FIELDS`,
        polled until all or a few seconds: ingested points take a moment to be searchable."""
        expected = FIELDS * readings
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
                    return points // FIELDS
                time.sleep(0.2)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


class JetStream:
    """`nodes` nats-servers (one: a lone JetStream server) under `home`, stream BENCH on
    `bench.>` with a replica on each node, one subject per device."""

    sink = "nats"

    def __init__(self, home: Path, nodes: int) -> None:
        self._cluster = NatsCluster.start(home / "nats", nodes=nodes)
        try:
            self._cluster.add_stream(NATS_STREAM, ["bench.>"])  # replicas: one per node
        except BaseException:
            self._cluster.close()
            raise
        self.options = {
            "url": ",".join(self._cluster.urls),
            "subject": "bench.{device_id}",
            "stream": NATS_STREAM,
        }

    def cpu_s(self) -> float:
        return sum(proc_cpu_s(n.process.pid) for n in self._cluster.nodes if n.process)

    def stored(self, readings: int) -> int:
        return self._cluster.message_count(NATS_STREAM)

    def close(self) -> None:
        self._cluster.close()


class Postgres:
    """A PostgreSQL server in a temporary home of its own (it runs as another user, who
    cannot enter the bench's root-only work dir), with a login role and its database."""

    sink = "postgres"

    def __init__(self) -> None:
        self._server = PostgresServer.create()
        try:
            self._server.start()
            self._server.sql(f"CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASSWORD}'")
            self._server.sql(f"CREATE DATABASE {PG_DATABASE} OWNER {PG_USER}")
            password_file = self._server.home / "password"
            password_file.write_text(PG_PASSWORD + "\n")
            password_file.chmod(0o600)
        except BaseException:
            self._server.close()
            raise
        self.options = {
            "url": self._server.url(PG_USER, PG_DATABASE),
            "password_file": str(password_file),
        }

    def cpu_s(self) -> float:
        """The postmaster and its children, plus the children it has reaped.

        Not its process group: each child of the postmaster calls setsid(), so every backend
        is a group of its own. A backend that has exited (the sink's, once the child hangs up)
        is in the postmaster's cutime and cstime once reaped."""
        process = self._server.process
        assert process is not None, "postgres is not running"
        postmaster = process.pid
        leader = proc_stat(postmaster)
        ticks = sum(int(f) for f in leader[11:15])
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = proc_stat(int(entry.name))
            except OSError:
                continue  # gone since the listing
            if int(fields[1]) == postmaster:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / CLK_TCK

    def stored(self, readings: int) -> int:
        db = PG_DATABASE
        if not self._server.sql(f"SELECT to_regclass('{PG_TABLE}')", dbname=db)[0][0]:
            return 0  # the sink makes its table on its first batch
        return int(self._server.sql(f"SELECT count(*) FROM {PG_TABLE}", dbname=db)[0][0])

    def close(self) -> None:
        # A fast shutdown first, so the postmaster reaps its children: close() is kill -9 of
        # the postmaster alone (its children have groups of their own), left to exit by
        # themselves and be reaped by pid 1.
        try:
            self._server.stop()
        finally:
            self._server.close()


def engine_missing(engine: str) -> str | None:
    """Why rows of `engine` cannot run here (a binary or a client library is missing)."""
    if engine == "vm" and VM_BINARY is None:
        return "victoria-metrics is not installed (apt install victoria-metrics)"
    if engine == "nats":
        return nats_server.missing()
    if engine == "postgres":
        if reason := pg_server.missing():
            return reason
        if importlib.util.find_spec("psycopg") is None:
            return "psycopg is not installed (pip install 'pilog[postgres]')"
    return None


def start_engine(row: Row, home: Path) -> Engine:
    if row.engine == "receiver":
        return Receiver(python_checks=row.previous)
    if row.engine == "vm":
        return VictoriaMetrics(home)
    if row.engine == "nats":
        return JetStream(home, row.nodes)
    if row.engine == "postgres":
        return Postgres()
    raise ValueError(f"row {row.key}: unknown engine {row.engine!r}")


# -- the parent: rows, runs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    engine: str  # "" (row A) | receiver | vm | nats | postgres
    batch_max: int = 1000
    gzip: bool = True  # the HTTP sinks' option; the others have none
    previous: bool = False
    nodes: int = 1  # of the JetStream cluster


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
    Row("N1", "nats → JetStream, 3 nodes, 3 replicas, batch 1000", "nats", nodes=3),
    Row("N2", "nats → JetStream, 1 node, batch 1000", "nats", nodes=1),
    Row("P1", "postgres → PostgreSQL, batch 1000", "postgres"),
    Row("P2", "postgres → PostgreSQL, batch 5000", "postgres", 5000),
)


def run_row(row: Row, backlog: Path, work: Path) -> dict[str, Any]:
    data = fresh_copy(backlog, work)
    engine: Engine | None = None
    try:
        cmd = [sys.executable, __file__, "--data", str(data)]
        if row.engine == "":
            cmd += ["--child", "replay"]
        else:
            engine = start_engine(row, data.parent)
            cmd += ["--child", "group", "--sink", engine.sink, "--batch-max", str(row.batch_max)]
            cmd += [f"--option={key}={value}" for key, value in engine.options.items()]
            cmd += [] if row.gzip else ["--no-gzip"]
            cmd += ["--previous"] if row.previous else []
        e0 = engine.cpu_s() if engine is not None else 0.0
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"row {row.key} exited {done.returncode}: {done.stderr[-2000:]}")
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if engine is not None:
            out["engine_cpu_s"] = engine.cpu_s() - e0
            out["stored"] = engine.stored(out["readings"])
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
    p.add_argument("--option", action="append", default=[], help=argparse.SUPPRESS)  # KEY=VALUE
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
    rows = list(ROWS)
    if args.rows:
        keys = args.rows.split(",")
        if unknown := sorted(set(keys) - {r.key for r in ROWS}):
            known = ", ".join(r.key for r in ROWS)
            console.print(f"[red]unknown rows {', '.join(unknown)}: the rows are {known}[/]")
            return 2
        rows = [r for r in rows if r.key in keys]
    for engine in dict.fromkeys(r.engine for r in rows):  # one line per missing engine
        if reason := engine_missing(engine):
            left_out = [r.key for r in rows if r.engine == engine]
            console.print(f"[yellow]rows {', '.join(left_out)} left out: {reason}[/]")
            rows = [r for r in rows if r.engine != engine]
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
                results[row.key].append(run_row(row, backlog, work))
        print_rows(console, rows, results, args.events)
        gzip_figures(console)
        console.print(f"load avg at the end: {load()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
