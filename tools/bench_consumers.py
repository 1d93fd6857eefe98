"""Consumers catching up on a large backlog, and following an idle log, as subprocesses.

Issue text: "Consumers follow the log as it grows without polling the disk in a busy loop, and
catch up from far behind (days of backlog) at full speed without holding the backlog in
memory." Run from the repository root:

    .venv/bin/python tools/bench_consumers.py            # 500k readings, 3 runs per row
    .venv/bin/python tools/bench_consumers.py --quick    # a smoke run

One backlog per run of the benchmark (`--events` readings, appended with `append_many` by a
fake clock spanning hours, then closed). Each row opens a fresh copy of it in a fresh
subprocess (so peak RSS is the row's own) and times start → cursor at the end of the log:

    A   baseline: `History(data_dir).events(0)`, every event decoded (the ceiling of a consumer)
    B   `ConsumerGroup` with one `http-json` sink to `python -m pilog.testing.receiver` running
        in another process, for batch_max 1000 and 5000, gzip on and off
    S   the original design's consumer, for comparison with B: readings in an SQLite table
        (WAL, synchronous=NORMAL, an index on (pushed, id)), a loop of SELECT 500 unpushed,
        POST them as the same JSON objects (httpx, keep-alive, no gzip), UPDATE pushed = 1,
        commit; against the same receiver
    C   `ConsumerGroup` with projections `latest` and `rollup` (1m, 1h), commit_interval 200ms
        (not the 5 s default: the end is seen when the last commit copies the cursors to the
        index, and a 5 s interval would add up to 5 s to every run)

Row A and the first row B run once more on a backlog of `--events / 5` readings: peak RSS that
does not scale with N shows the backlog is not held in memory. Then "follow without busy
polling": a data dir with no appends, a ConsumerGroup with one sink and two projections
(caught up first), and the process's CPU time (getrusage) over `--idle-seconds`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from pilog.config import Config, parse_config
from pilog.consumers import ConsumerGroup
from pilog.datadir import EventLog
from pilog.events import Body, Reading
from pilog.history import History
from pilog.testing.clock import FakeClock

DEVICE_ID = "bench"
SENSORS = 8  # readings cycle through this many sensors
APPEND_CHUNK = 100  # readings per append_many while building the backlog
CHUNK_STEP_NS = 10 * 10**9  # the fake clock advances this much per chunk: 500k readings ≈ 14 h
POLL_S = 0.02  # how often a child looks at the cursors in the index
CATCH_UP_TIMEOUT_S = 600.0
NO_BOUND_BYTES = 64 << 30  # max_bytes far above the backlog: retention is not measured
MiB = 1 << 20


# -- configs ------------------------------------------------------------------------------


def config_text(data_dir: Path, *, url: str | None, batch_max: int, gzip: bool, proj: bool) -> str:
    lines = [
        f'device_id = "{DEVICE_ID}"',
        f'data_dir = "{data_dir}"',
        "[log]",
        'fsync = "interval"',
        "fsync_interval_ms = 100",
        f"max_bytes = {NO_BOUND_BYTES}",
    ]
    if url is not None:
        lines += ["[[sink]]", 'name = "api"', 'type = "http-json"', f'url = "{url}"']
        lines += [f"batch_max = {batch_max}", f"gzip = {'true' if gzip else 'false'}"]
    if proj:
        lines += ["[[projection]]", 'type = "latest"', 'commit_interval = "200ms"']
        lines += ["[[projection]]", 'type = "rollup"', 'windows = ["1m", "1h"]']
        lines += ['commit_interval = "200ms"']
    return "\n".join(lines) + "\n"


def make_config(data_dir: Path, **kw: Any) -> Config:
    kw = {"url": None, "batch_max": 1000, "gzip": True, "proj": False, **kw}
    return parse_config(tomllib.loads(config_text(data_dir, **kw)), "bench", {})


def reading(i: int) -> Reading:
    return Reading(
        f"air-{i % SENSORS}",
        "bme280",
        {
            "temperature_c": 20.0 + (i % 1000) / 100,
            "humidity_pct": 40.0 + (i % 700) / 50,
            "pressure_hpa": 1000.0 + (i % 300) / 10,
        },
    )


def build_backlog(data_dir: Path, n: int) -> dict[str, Any]:
    """Append `n` readings, stamped over the past hours, in chunks; close the log."""
    chunks = -(-n // APPEND_CHUNK)
    now = time.time_ns()
    clock = FakeClock(now - chunks * CHUNK_STEP_NS, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
    events = EventLog(make_config(data_dir), clock=clock)
    t0 = time.perf_counter()
    try:
        for start in range(0, n, APPEND_CHUNK):
            bodies: list[Body] = [reading(i) for i in range(start, min(n, start + APPEND_CHUNK))]
            events.append_many(bodies)
            clock.advance(CHUNK_STEP_NS)
        next_seq = events.writer.next_seq
    finally:
        events.close()
    segments = sorted((data_dir / "log").iterdir())
    disk = sum(p.stat().st_size for p in segments)
    return {
        "events": next_seq,
        "seconds": time.perf_counter() - t0,
        "segments": len(segments),
        "disk_bytes": disk,
        "span_h": chunks * CHUNK_STEP_NS / 3.6e12,
    }


SQLITE_BATCH = 500  # the original design's SELECT ... LIMIT
SQLITE_EPOCH = "0" * 32  # ids must look like device:epoch:seq for the receiver


def build_sqlite_backlog(data_dir: Path, n: int) -> None:
    """The same readings as `build_backlog`, as the original design kept them."""
    import sqlite3

    from pilog.events import rfc3339

    data_dir.mkdir(parents=True)
    db = sqlite3.connect(data_dir / "queue.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE readings (id INTEGER PRIMARY KEY, sensor TEXT, sensor_type TEXT, "
        "payload TEXT, ts TEXT, pushed INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("CREATE INDEX unpushed ON readings (pushed, id)")
    ts = time.time_ns() - n * 10**8
    rows = []
    for i in range(n):
        r = reading(i)
        rows.append((i, r.sensor, r.sensor_type, json.dumps(r.values), rfc3339(ts + i * 10**8)))
    db.executemany(
        "INSERT INTO readings (id, sensor, sensor_type, payload, ts) VALUES (?, ?, ?, ?, ?)", rows
    )
    db.commit()
    db.close()


def sqlite_object(seq: int, sensor: str, kind: str, payload: str, ts: str) -> dict[str, Any]:
    """A row as the wire contract's reading object."""
    return {
        "id": f"{DEVICE_ID}:{SQLITE_EPOCH}:{seq}",
        "device_id": DEVICE_ID,
        "seq": seq,
        "sensor": sensor,
        "sensor_type": kind,
        "payload": json.loads(payload),
        "timestamp": ts,
    }


def child_sqlite(data_dir: Path, url: str) -> dict[str, Any]:
    """SELECT 500 unpushed, POST, UPDATE pushed = 1, commit, until none is left."""
    import sqlite3

    import httpx

    db = sqlite3.connect(data_dir / "queue.sqlite")
    db.execute("PRAGMA synchronous=NORMAL")
    sent = requests = 0
    c0, t0 = cpu_s(), time.perf_counter()
    with httpx.Client(timeout=30) as client:
        while True:
            batch = db.execute(
                "SELECT id, sensor, sensor_type, payload, ts FROM readings WHERE pushed = 0 "
                "ORDER BY id LIMIT ?",
                (SQLITE_BATCH,),
            ).fetchall()
            if not batch:
                break
            body = json.dumps([sqlite_object(*row) for row in batch])
            answer = client.post(url, content=body, headers={"Content-Type": "application/json"})
            requests += 1
            if not answer.is_success:
                continue  # the same SELECT sends them again
            first, last = batch[0][0], batch[-1][0]
            db.execute("UPDATE readings SET pushed = 1 WHERE id BETWEEN ? AND ?", (first, last))
            db.commit()
            sent += len(batch)
    db.close()
    return {"events": sent, "elapsed_s": time.perf_counter() - t0, "cpu_s": cpu_s() - c0,
            "delivered": {"sink:api": sent}, "requests": requests, "caught_up": True}  # fmt: skip


# -- the child: one row, in its own process ----------------------------------------------


def peak_rss() -> dict[str, float]:
    """ru_maxrss and VmHWM of this process, in MiB."""
    hwm = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return {"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "hwm_mib": hwm}


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_replay(data_dir: Path) -> dict[str, Any]:
    c0, t0 = cpu_s(), time.perf_counter()
    n = readings = 0
    for event in History(data_dir).events(0):
        n += 1
        readings += isinstance(event.body, Reading)
    return {"events": n, "readings": readings, "elapsed_s": time.perf_counter() - t0,
            "cpu_s": cpu_s() - c0}  # fmt: skip


def wait_cursors(events: EventLog, names: list[str], end: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    none: dict[str, int] = {}
    while time.monotonic() < deadline:
        cursors = events.read_index(lambda i: i.cursors(), none)
        if all(cursors.get(n, -1) >= end for n in names):
            return True
        time.sleep(POLL_S)
    return False


def child_group(config: Config, idle_s: float) -> dict[str, Any]:
    """Open the data dir as `pilog run` would, start its consumers, time the catch-up."""
    events = EventLog(config)
    try:
        end = events.writer.next_seq
        group = ConsumerGroup.open(config, events)
        names = [c.name for c in group.consumers]
        c0, t0 = cpu_s(), time.perf_counter()
        group.start()
        done = wait_cursors(events, names, end, CATCH_UP_TIMEOUT_S)
        elapsed = time.perf_counter() - t0
        out: dict[str, Any] = {"events": end, "elapsed_s": elapsed, "cpu_s": cpu_s() - c0}
        out["caught_up"] = done
        out["delivered"] = {c.name: c.state.delivered for c in group.consumers}
        out["requests"] = sum(c.state.requests for c in group.consumers)
        if idle_s > 0:
            c1, t1 = cpu_s(), time.monotonic()
            time.sleep(idle_s)
            out["idle_cpu_s"], out["idle_s"] = cpu_s() - c1, time.monotonic() - t1
        group.stop(5)
        return out
    finally:
        events.close()


def child_main(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if args.child == "replay":
        out = child_replay(data)
    elif args.child == "sqlite":
        out = child_sqlite(data, args.url)
    else:
        config = make_config(
            data,
            url=args.url,
            batch_max=args.batch_max,
            gzip=args.gzip,
            proj=args.child in ("proj", "idle"),
        )
        if args.child == "idle":
            # A log that has a little in it, caught up, then no appends at all.
            events = EventLog(config)
            events.append_many([reading(i) for i in range(APPEND_CHUNK)])
            events.close()
        out = child_group(config, args.idle_seconds if args.child == "idle" else 0.0)
    out.update(peak_rss())
    print(json.dumps(out), flush=True)
    return 0


# -- the parent: rows, runs, receivers ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    child: str  # replay | group | proj | sqlite
    batch_max: int = 1000
    gzip: bool = True
    small: bool = False  # on the N/5 backlog

    @property
    def sink(self) -> bool:
        return self.child in ("group", "sqlite")


class ReceiverProc:
    """`python -m pilog.testing.receiver --port 0` in its own process."""

    def __init__(self, *extra: str) -> None:
        cmd = [sys.executable, "-m", "pilog.testing.receiver", "--port", "0", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.proc.kill()
            raise RuntimeError(f"receiver did not print its URL: {self.url!r}")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> dict[str, Any]:
        """SIGTERM, then the stats it prints on its way out."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return {}
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {}


def run_child(mode: str, data: Path, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--data", str(data), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} exited {done.returncode}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def fresh_copy(backlog: Path, parent: Path) -> Path:
    """A copy of the pristine backlog: no cursor, no projection state, nothing appended."""
    copy = Path(tempfile.mkdtemp(prefix="run-", dir=parent)) / "data"
    shutil.copytree(backlog, copy)
    return copy


def run_row(row: Row, backlog: Path, work: Path) -> dict[str, Any]:
    data = fresh_copy(backlog, work)
    receiver = ReceiverProc() if row.sink else None
    try:
        extra = ["--batch-max", str(row.batch_max)] + ([] if row.gzip else ["--no-gzip"])
        if receiver is not None:
            extra += ["--url", receiver.url]
        mode = row.child
        out = run_child(mode, data, *extra)
        if receiver is not None:
            out["receiver_cpu_s"] = receiver.cpu_s()
            out["receiver"] = receiver.close()
            receiver = None
        return out
    finally:
        if receiver is not None:
            receiver.close()
        shutil.rmtree(data.parent, ignore_errors=True)


def run_idle(backlog: Path, work: Path, seconds: float) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="idle-", dir=work)) / "data"
    receiver = ReceiverProc()
    try:
        extra = ["--url", receiver.url, "--idle-seconds", str(seconds)]
        return run_child("idle", data, *extra)
    finally:
        receiver.close()
        shutil.rmtree(data.parent, ignore_errors=True)


# -- report -------------------------------------------------------------------------------


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def rate(r: dict[str, Any]) -> float:
    return float(r["events"]) / float(r["elapsed_s"])


def acked(r: dict[str, Any]) -> float:
    """Readings acknowledged (sink) or events applied (projections: the slower one), per s."""
    return float(min(r.get("delivered", {}).values(), default=0)) / float(r["elapsed_s"])


def print_rows(
    console: Console, rows: list[Row], results: dict[str, list[dict[str, Any]]], n: int
) -> None:
    t = Table(
        title=f"catch-up on a backlog of {n:,} readings (N/5 = {n // 5:,} where marked), "
        "medians of interleaved runs",
        box=box.SIMPLE_HEAVY,
    )
    cols = ("row", "what", "events/s", "min..max", "vs A", "delivered/s", "s", "CPU s",
            "rx CPU s", "peak RSS MiB", "ru_maxrss MiB", "runs")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col in ("row", "what") else "right")
    base = med([rate(r) for r in results["A"]])
    for row in rows:
        rs = results[row.key]
        rates = [rate(r) for r in rs]
        rx = [r["receiver_cpu_s"] for r in rs if "receiver_cpu_s" in r]
        t.add_row(
            row.key,
            row.label,
            f"{med(rates):,.0f}",
            f"{min(rates):,.0f}..{max(rates):,.0f}",
            f"{med(rates) / base:.2f}" if not row.small else "-",
            f"{med([acked(r) for r in rs]):,.0f}" if row.child != "replay" else "-",
            f"{med([r['elapsed_s'] for r in rs]):.2f}",
            f"{med([r['cpu_s'] for r in rs]):.2f}",
            f"{med(rx):.2f}" if rx else "-",
            f"{med([r['hwm_mib'] for r in rs]):.1f}",
            f"{med([r['maxrss_mib'] for r in rs]):.1f}",
            str(len(rs)),
        )
    console.print(t)
    bad = [f"{k}: {r}" for k, rs in results.items() for r in rs if not r.get("caught_up", True)]
    for line in bad:
        console.print(f"[red]did not catch up within {CATCH_UP_TIMEOUT_S:g} s[/] {line}")


def print_vs_sqlite(
    console: Console, rows: list[Row], results: dict[str, list[dict[str, Any]]]
) -> None:
    """Each http-json row against the original design's consumer (row S), by median."""
    if not results.get("S"):
        return
    s = med([rate(r) for r in results["S"]])
    ratios = [
        f"{row.key} {med([rate(r) for r in results[row.key]]) / s:.2f}x"
        for row in rows
        if row.child == "group" and not row.small
    ]
    console.print(f"http-json against the original design's consumer (S): {', '.join(ratios)}")


def print_idle(console: Console, r: dict[str, Any]) -> None:
    pct = 100.0 * r["idle_cpu_s"] / r["idle_s"]
    console.print(
        f"follow without busy polling: 1 http-json sink + latest + rollup, caught up, no "
        f"appends, {r['idle_s']:.1f} s: CPU {r['idle_cpu_s'] * 1000:.0f} ms = "
        f"[bold]{pct:.2f}% of one core[/] (whole process: consumers, log committer, "
        f"this poller waking every {POLL_S * 1000:.0f} ms for the first catch-up only); "
        f"peak RSS {r['hwm_mib']:.1f} MiB"
    )


# -- main ---------------------------------------------------------------------------------


def rows_for(quick: bool) -> list[Row]:
    rows = [
        Row("A", "raw replay, History.events(0), decoded", "replay"),
        Row("B1", "http-json, batch 1000, gzip", "group", 1000, True),
        Row("B2", "http-json, batch 1000, no gzip", "group", 1000, False),
        Row("B3", "http-json, batch 5000, gzip", "group", 5000, True),
        Row("B4", "http-json, batch 5000, no gzip", "group", 5000, False),
        Row("S", "original design: SQLite SELECT 500 / POST / UPDATE / commit", "sqlite"),
        Row("C", "projections latest + rollup (1m, 1h)", "proj"),
        Row("A/5", "row A on N/5", "replay", small=True),
        Row("B1/5", "row B1 on N/5", "group", 1000, True, small=True),
        Row("C/5", "row C on N/5", "proj", small=True),
    ]
    return [r for r in rows if r.key in ("A", "B1", "S", "C", "A/5", "C/5")] if quick else rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--events", type=int, help="readings in the backlog (default 500000)")
    p.add_argument("--runs", type=int, help="runs per row, interleaved (default 3)")
    p.add_argument("--idle-seconds", type=float, help="idle window (default 10)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 50k readings, 1 run")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the work dir")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    # The child's side (internal).
    p.add_argument(
        "--child", choices=("replay", "group", "proj", "idle", "sqlite"), help=argparse.SUPPRESS
    )
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--batch-max", type=int, default=1000, help=argparse.SUPPRESS)
    p.add_argument("--no-gzip", dest="gzip", action="store_false", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = {
        "events": 50_000 if args.quick else 500_000,
        "runs": 1 if args.quick else 3,
        "idle_seconds": 3.0 if args.quick else 10.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def progress(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    console = Console(width=160, highlight=False)
    u = platform.uname()
    console.print(f"[bold]pilog consumers benchmark[/] {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
    console.print(
        f"machine: {u.system} {u.release} {u.machine}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pilog-bench-consumers-", dir=args.dir))
    try:
        backlogs: dict[bool, Path] = {}
        segments: dict[bool, int] = {}
        for small, n in ((False, args.events), (True, args.events // 5)):
            progress(f"building a backlog of {n:,} readings")
            backlogs[small] = work / ("small" if small else "big") / "data"
            info = build_backlog(backlogs[small], n)
            segments[small] = info["segments"]
            console.print(
                f"backlog of {info['events']:,} events: {info['segments']} segments, "
                f"{info['disk_bytes'] / MiB:.1f} MiB allocated, stamped over "
                f"{info['span_h']:.1f} h, built in {info['seconds']:.1f} s"
            )
        progress(f"building the original design's SQLite queue of {args.events:,} readings")
        sqlite_backlog = work / "sqlite" / "data"
        build_sqlite_backlog(sqlite_backlog, args.events)
        rows = rows_for(args.quick)
        results: dict[str, list[dict[str, Any]]] = {r.key: [] for r in rows}
        for run in range(args.runs):  # interleaved, the order rotated each run
            order = rows[run % len(rows) :] + rows[: run % len(rows)]
            for row in order:
                progress(f"run {run + 1}/{args.runs}: {row.key} {row.label}")
                backlog = sqlite_backlog if row.child == "sqlite" else backlogs[row.small]
                results[row.key].append(run_row(row, backlog, work))
        progress(f"idle: {args.idle_seconds:g} s")
        idle = run_idle(backlogs[True], work, args.idle_seconds)
        print_rows(console, rows, results, args.events)
        console.print(
            "peak RSS: a consumer holds one read budget of the log at a time (about 1 MiB of "
            "frames, pilog.log.reader.READ_BUDGET_BYTES), decoded, so the peak does not grow "
            f"with N (segments: N/5 {segments[True]}, N {segments[False]})"
        )
        print_vs_sqlite(console, rows, results)
        print_idle(console, idle)
        check_delivery(console, rows, results)
        console.print(f"load avg at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if args.keep:
            console.print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def check_delivery(
    console: Console, rows: list[Row], results: dict[str, list[dict[str, Any]]]
) -> None:
    """Say so when the receiver's unique count differs from what the uploader counted."""

    def get(r: dict[str, Any]) -> tuple[int, int]:
        return int(r.get("receiver", {}).get("unique", -1)), int(r["delivered"]["sink:api"])

    for row in rows:
        for r in results[row.key]:
            if row.sink and get(r)[0] != get(r)[1]:
                console.print(f"[red]{row.key}: receiver unique / uploader delivered = {get(r)}[/]")


if __name__ == "__main__":
    sys.exit(main())
