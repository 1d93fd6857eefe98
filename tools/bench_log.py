"""Durable appends/s of pilog's log beside the SQLite queue it replaces and a bare Python loop.

Issue 2, "Performance": one run on one machine with one reference reading; every row is
repeated (runs interleaved, the row order rotated each run) and the median is printed, with
the ratios the issue sets as targets. Rows:

    1   SQLite queue: WAL, synchronous=FULL, one row per reading, one commit per reading
    2   the same, committing 1000 readings per transaction
    3   bare loop: struct + zlib.crc32 frames (pilog's layout) into a buffer, one os.pwrite and
        one os.fdatasync per 100 ms window, into a preallocated file: the Python limit here
    4   pilog's log: open_log + LogWriter.append of a pre-encoded payload, fsync="interval"
    4e  pilog's EventLog.append(Reading(...)): stamped and encoded per event, same policy
    4b  pilog's log, fsync="always", one appender waiting for each append (like row 1)
    5   `pilog run` as a subprocess, synthetic sensors at interval_ms = 0, stopped by SIGTERM

Then: replay of a cold log, open time of a 1 GiB log, peak RSS of `pilog run`.

Bytes written per event are counted two ways: this process's /proc/self/io write_bytes (charged
when a page turns dirty, so small synced appends are overcounted) and the sectors written of
the block device under the work dir (machine-wide: other processes' writes count too).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from rich import box
from rich.console import Console
from rich.table import Table

import pilog
from pilog.clock import boot_id
from pilog.config import Config, LogConfig, Size
from pilog.datadir import DataDirPaths, EventLog
from pilog.errors import LogFullError
from pilog.events import Reading, Record, decode_event, encode_record
from pilog.history import History
from pilog.log.format import FRAME_HEADER_BYTES, FRAME_RECORD
from pilog.log.reader import LogReader
from pilog.log.repair import open_log
from pilog.log.writer import LogOptions, LogWriter

SENSOR = "lab-air"
SENSOR_TYPE = "bme280"
VALUES: dict[str, float | int | str | bool] = {
    "temperature_c": 21.375,
    "humidity_pct": 45.25,
    "pressure_hpa": 1013.25,
}
DEVICE_ID = "bench"
WINDOW_S = 0.1  # the group-commit window of rows 3, 4, 4e and 5
SQLITE_BATCH = 1000  # readings per transaction in row 2
POLL_BATCH = 100  # readings per append_many in row 4m
CHECK_EVERY = 64  # appends between clock reads in the tight loops
BARE_PREALLOC_BYTES = 1 << 30
NO_BOUND_BYTES = 64 << 30  # max_bytes far above anything written: the bound is not measured
STOP_TIMEOUT_S = 30.0

# Targets from issue 2.
TARGET_VS_ROW1 = 20.0
TARGET_VS_ROW2 = 1.5
TARGET_VS_ROW3 = 0.7
TARGET_ALWAYS_VS_ROW1 = 1.2
TARGET_DEVICE_PER_FRAME = 1.2
TARGET_REPLAY_PER_S = 300_000.0


# -- counters ---------------------------------------------------------------------------


def proc_write_bytes(pid: str = "self") -> int:
    """`write_bytes` of /proc/<pid>/io: bytes this process caused to be sent to storage."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


class DiskCounters:
    """Process and block-device write counters for the filesystem holding `directory`."""

    def __init__(self, directory: Path) -> None:
        st = os.stat(directory)
        self.dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        node = Path(f"/sys/dev/block/{self.dev}")
        self.stat_path: Path | None = node / "stat" if (node / "stat").exists() else None
        self.device_name = node.resolve().name if self.stat_path else "?"

    def read(self) -> tuple[int, int | None]:
        """(process write_bytes, device bytes written or None when the device is unknown)."""
        dev = None
        if self.stat_path is not None:
            dev = int(self.stat_path.read_text().split()[6]) * 512  # field 7: sectors written
        return proc_write_bytes(), dev


@dataclass(slots=True)
class Sample:
    """One timed run of one row."""

    events: int
    elapsed_s: float
    proc_bytes: int | None = None
    dev_bytes: int | None = None
    refused: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Window:
    """The timed part of a row: counters and clock at start, then at stop."""

    def __init__(self, counters: DiskCounters) -> None:
        self._counters = counters
        self._io0 = counters.read()
        self.t0 = time.perf_counter()

    def stop(self, events: int) -> Sample:
        elapsed = time.perf_counter() - self.t0
        proc1, dev1 = self._counters.read()
        proc0, dev0 = self._io0
        dev = dev1 - dev0 if dev1 is not None and dev0 is not None else None
        return Sample(events, elapsed, proc1 - proc0, dev)


@dataclass(frozen=True, slots=True)
class Bench:
    """What every row shares."""

    payload: bytes
    ts_ns: int
    duration_s: float
    counters: DiskCounters
    run_seconds: float
    run_sensors: int
    run_batch: int

    @property
    def frame_bytes(self) -> int:
        return FRAME_HEADER_BYTES + len(self.payload)


def reference_record(ts_ns: int | None = None, mono_ns: int | None = None) -> Record:
    ts = time.time_ns() if ts_ns is None else ts_ns
    mono = time.clock_gettime_ns(time.CLOCK_BOOTTIME) if mono_ns is None else mono_ns
    return Record(ts, mono, boot_id(), Reading(SENSOR, SENSOR_TYPE, dict(VALUES)))


def log_options(fsync: str) -> LogOptions:
    return LogOptions(DEVICE_ID, fsync=fsync, fsync_interval_s=WINDOW_S, max_bytes=NO_BOUND_BYTES)


# -- rows 1 and 2: the SQLite queue -----------------------------------------------------


def sqlite_queue(work: Path, b: Bench, per_commit: int) -> Sample:
    db = sqlite3.connect(work / "queue.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE queue (id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, payload BLOB NOT NULL)"
    )
    execute = db.execute
    insert = "INSERT INTO queue (ts_ns, payload) VALUES (?, ?)"
    row = (b.ts_ns, b.payload)
    committed = 0
    window = Window(b.counters)
    deadline = window.t0 + b.duration_s
    while True:
        execute("BEGIN")
        for _ in range(per_commit):
            execute(insert, row)
        execute("COMMIT")
        committed += per_commit
        if time.perf_counter() >= deadline:
            break
    sample = window.stop(committed)
    db.close()
    return sample


def sqlite_each(work: Path, b: Bench) -> Sample:
    return sqlite_queue(work, b, 1)


def sqlite_batched(work: Path, b: Bench) -> Sample:
    return sqlite_queue(work, b, SQLITE_BATCH)


# -- row 3: the bare loop ---------------------------------------------------------------


def pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def bare_loop(work: Path, b: Bench) -> Sample:
    fd = os.open(work / "bare.seg", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    allocated = BARE_PREALLOC_BYTES
    os.posix_fallocate(fd, 0, allocated)
    os.fdatasync(fd)
    pack_body, pack_crc, crc32 = struct.Struct("<IQB").pack, struct.Struct("<I").pack, zlib.crc32
    payload, length = b.payload, len(b.payload)
    buf = bytearray()
    seq = offset = durable = 0
    window = Window(b.counters)
    deadline = window.t0 + b.duration_s
    next_sync = window.t0 + WINDOW_S
    while True:
        for _ in range(CHECK_EVERY):
            body = pack_body(length, seq, FRAME_RECORD)
            buf += pack_crc(crc32(payload, crc32(body)))
            buf += body
            buf += payload
            seq += 1
        now = time.perf_counter()
        if now < next_sync and now < deadline:
            continue
        if offset + len(buf) > allocated:
            allocated *= 2
            os.posix_fallocate(fd, 0, allocated)
        pwrite_all(fd, buf, offset)
        offset += len(buf)
        os.fdatasync(fd)
        durable = seq
        buf.clear()
        if now >= deadline:
            break
        next_sync = time.perf_counter() + WINDOW_S
    sample = window.stop(durable)
    os.close(fd)
    return sample


# -- rows 4, 4e, 4b: pilog --------------------------------------------------------------


def append_until_deadline(b: Bench, burst: Callable[[], object]) -> tuple[Window, int]:
    """Call `burst` (CHECK_EVERY appends) until the row's time is up; return (window, refusals).

    A refused append (LogFullError: the committer is behind its memory bound) is counted and
    retried after a millisecond; the row's table line shows the count when there were any.
    """
    refused = 0
    window = Window(b.counters)
    deadline = window.t0 + b.duration_s
    while True:
        try:
            burst()
        except LogFullError:
            refused += 1
            time.sleep(0.001)
        if time.perf_counter() >= deadline:
            return window, refused


def pilog_interval(work: Path, b: Bench) -> Sample:
    writer, _ = open_log(work / "log", work / "quarantine", log_options("interval"))
    append, payload, ts = writer.append, b.payload, b.ts_ns

    def burst() -> None:
        for _ in range(CHECK_EVERY):
            append(payload, ts)

    window, refused = append_until_deadline(b, burst)
    sample = window.stop(writer.sync() + 1)  # seqs start at 0
    sample.refused = refused
    writer.close()
    return sample


def pilog_interval_batched(work: Path, b: Bench) -> Sample:
    """Row 4 with `append_many`, as the runtime appends each poll's readings."""
    writer, _ = open_log(work / "log", work / "quarantine", log_options("interval"))
    append_many, batch, ts = writer.append_many, [b.payload] * POLL_BATCH, b.ts_ns

    def burst() -> None:
        append_many(batch, ts)  # one poll's worth between clock reads

    window, refused = append_until_deadline(b, burst)
    sample = window.stop(writer.sync() + 1)
    sample.refused = refused
    writer.close()
    return sample


def pilog_eventlog(work: Path, b: Bench) -> Sample:
    log = LogConfig(fsync="interval", fsync_interval_ms=round(WINDOW_S * 1000))
    events = EventLog(Config(device_id=DEVICE_ID, data_dir=work / "data", log=unbounded(log)))
    append = events.append

    def burst() -> None:
        for _ in range(CHECK_EVERY):
            append(Reading(SENSOR, SENSOR_TYPE, VALUES))

    window, refused = append_until_deadline(b, burst)
    sample = window.stop(events.writer.sync() + 1)
    sample.refused = refused
    events.close()
    return sample


def unbounded(log: LogConfig) -> LogConfig:
    return msgspec.structs.replace(log, max_bytes=Size(NO_BOUND_BYTES))


def pilog_always(work: Path, b: Bench) -> Sample:
    writer, _ = open_log(work / "log", work / "quarantine", log_options("always"))
    append, wait, payload, ts = writer.append, writer.wait_durable, b.payload, b.ts_ns
    events = 0
    window = Window(b.counters)
    deadline = window.t0 + b.duration_s
    while time.perf_counter() < deadline:
        if not wait(append(payload, ts)):
            raise RuntimeError("pilog writer failed")
        events += 1
    sample = window.stop(events)
    writer.close()
    return sample


# -- row 5: `pilog run` end to end ------------------------------------------------------


def run_config(data_dir: Path, sensors: int, batch: int) -> str:
    lines = [
        f'device_id = "{DEVICE_ID}"',
        f'data_dir = "{data_dir}"',
        "",
        "[log]",
        'fsync = "interval"',
        f"fsync_interval_ms = {round(WINDOW_S * 1000)}",
        f"max_bytes = {NO_BOUND_BYTES}",
    ]
    for i in range(sensors):
        lines += ["", "[[sensor]]", f'name = "syn-{i}"', 'driver = "synthetic"']
        lines += ["interval_ms = 0", f"batch = {batch}"]
    return "\n".join(lines) + "\n"


class RowFailedError(Exception):
    """A run of a row failed; the benchmark reports it and goes on."""


def vm_hwm_bytes(pid: int) -> int | None:
    """Peak resident set of a live process; None once it has exited (a zombie has none)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def stop_child(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, int | None]:
    """SIGTERM `proc` and reap it (SIGKILL after `timeout_s`); return (exit code, VmHWM).

    VmHWM is sampled until the process is gone, so the shutdown's flush counts. (wait4's
    ru_maxrss would not do: exec keeps the high-water mark of the forking process.)
    """
    hwm = vm_hwm_bytes(proc.pid)
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while True:
        now = vm_hwm_bytes(proc.pid)
        if now is not None:
            hwm = max(hwm or 0, now)
        try:
            return proc.wait(0.005), hwm
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                deadline = float("inf")


def pilog_run(work: Path, b: Bench) -> Sample:
    data = work / "data"
    config = work / "pilog.toml"
    config.write_text(run_config(data, b.run_sensors, b.run_batch))
    _, dev0 = b.counters.read()
    t0 = time.perf_counter()
    with (work / "run.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pilog", "run", "-c", str(config)],
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        time.sleep(b.run_seconds)
        before = vm_hwm_bytes(proc.pid)
        code, hwm = stop_child(proc, STOP_TIMEOUT_S)
    wall = time.perf_counter() - t0
    _, dev1 = b.counters.read()
    if code != 0:
        kept = work.parent.parent / f"{work.parent.name}-{work.name}-run.log"
        shutil.copyfile(work / "run.log", kept)
        lines = (work / "run.log").read_text().splitlines()
        last = next((x for x in reversed(lines) if x and not x.startswith(" ")), "?")
        raise RowFailedError(f"`pilog run` exited {code} after SIGTERM: {last} (log: {kept})")
    readings, total, first_ts, last_ts = count_readings(data)
    span = (last_ts - first_ts) / 1e9 if last_ts > first_ts else wall
    dev = dev1 - dev0 if dev1 is not None and dev0 is not None else None
    extra = {"events": float(total), "wall_s": wall}
    if before is not None:
        extra["hwm_before"] = float(before)
    if hwm is not None:
        extra["hwm"] = float(hwm)
    return Sample(readings, span, None, dev, extra=extra)


def count_readings(data_dir: Path) -> tuple[int, int, int, int]:
    """(readings, events, first reading ts, last reading ts); checks seqs are dense from 0."""
    readings = total = first_ts = last_ts = 0
    for event in History(data_dir).events(0):
        if event.seq != total:
            raise RuntimeError(f"seq {event.seq} where {total} expected")
        total += 1
        if isinstance(event.body, Reading):
            if not readings:
                first_ts = event.ts_ns
            last_ts = event.ts_ns
            readings += 1
    return readings, total, first_ts, last_ts


# -- replay and open time ---------------------------------------------------------------


def drop_caches() -> bool:
    """Write back and drop the page cache (root only); False when not permitted."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def append_retrying(writer: LogWriter, payload: bytes, ts_ns: int) -> None:
    while True:
        try:
            writer.append(payload, ts_ns)
            return
        except LogFullError:
            time.sleep(0.005)  # the committer is behind (fsync="never" still bounds memory)


def build_replay_log(root: Path, events: int) -> None:
    """`events` readings with changing values and clocks, as a sensor would produce them."""
    paths = DataDirPaths(root)
    writer, _ = open_log(paths.log_dir, paths.quarantine_dir, log_options("never"))
    boot, ts0 = boot_id(), time.time_ns()
    mono0 = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    for i in range(events):
        ts = ts0 + i * 1_000_000
        values: dict[str, float | int | str | bool] = {
            "temperature_c": round(21.0 + (i % 997) * 0.004, 3),
            "humidity_pct": round(45.0 + (i % 991) * 0.01, 3),
            "pressure_hpa": round(1013.25 + (i % 983) * 0.002, 3),
        }
        body = Reading(SENSOR, SENSOR_TYPE, values)
        append_retrying(writer, encode_record(Record(ts, mono0 + i, boot, body)), ts)
    writer.close()


def replay(log_dir: Path, decode: bool) -> Sample:
    n = 0
    t0 = time.perf_counter()
    for seq, payload in LogReader(log_dir).read_from(0):
        if decode:
            decode_event(seq, payload)
        n += 1
    return Sample(n, time.perf_counter() - t0)


def build_big_log(root: Path, b: Bench, target_bytes: int) -> int:
    """Fill a log with `target_bytes` of reference frames, fast (fsync="never"); return events."""
    paths = DataDirPaths(root)
    writer, _ = open_log(paths.log_dir, paths.quarantine_dir, log_options("never"))
    events = -(-target_bytes // b.frame_bytes)
    for _ in range(events):
        append_retrying(writer, b.payload, b.ts_ns)
    writer.close()
    return events


def time_open_log(root: Path) -> float:
    paths = DataDirPaths(root)
    t0 = time.perf_counter()
    writer, _ = open_log(paths.log_dir, paths.quarantine_dir, log_options("interval"))
    elapsed = time.perf_counter() - t0
    writer.close()
    return elapsed


def time_event_log(root: Path) -> float:
    log = unbounded(LogConfig())
    t0 = time.perf_counter()
    events = EventLog(Config(device_id=DEVICE_ID, data_dir=root, log=log))
    elapsed = time.perf_counter() - t0
    events.close()
    return elapsed


# -- the run ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    what: str
    fn: Callable[[Path, Bench], Sample]


ROWS = (
    Row("1", "SQLite WAL, synchronous=FULL, 1 per commit", sqlite_each),
    Row("2", f"SQLite WAL, synchronous=FULL, {SQLITE_BATCH} per commit", sqlite_batched),
    Row("3", "bare loop, pwrite + fdatasync per 100 ms", bare_loop),
    Row("4", "pilog log, interval 100 ms, pre-encoded", pilog_interval),
    Row("4m", f"pilog log, interval, append_many of {POLL_BATCH}", pilog_interval_batched),
    Row("4e", "pilog EventLog.append(Reading): encodes", pilog_eventlog),
    Row("4b", "pilog log, always, wait_durable each", pilog_always),
    Row("5", "`pilog run`, synthetic, interval_ms = 0", pilog_run),
)


IDLE = "idle"


def idle_device_rate(b: Bench) -> Sample:
    """What the device writes while this process sleeps: the machine's background."""
    window = Window(b.counters)
    time.sleep(b.duration_s)
    return window.stop(0)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_rows(
    work: Path, b: Bench, runs: int, keys: list[str], failures: list[str]
) -> dict[str, list[Sample]]:
    """Every row `runs` times, interleaved; a run idle first measures the device background."""
    rows = [r for r in ROWS if r.key in keys]
    results: dict[str, list[Sample]] = {r.key: [] for r in rows}
    results[IDLE] = []
    for run in range(runs):
        idle = idle_device_rate(b)
        results[IDLE].append(idle)
        order = rows[run % len(rows) :] + rows[: run % len(rows)]
        for row in order:
            sub = work / f"row{row.key}-run{run}"
            sub.mkdir()
            try:
                sample = row.fn(sub, b)
            except RowFailedError as e:
                progress(f"run {run + 1}/{runs} row {row.key:>2}: FAILED: {e}")
                failures.append(f"run {run + 1} row {row.key}: {e}")
                continue
            finally:
                shutil.rmtree(sub)
            if sample.dev_bytes is not None and idle.dev_bytes is not None:
                background = idle.dev_bytes / idle.elapsed_s * sample.elapsed_s
                sample.extra["dev_net"] = sample.dev_bytes - background
            results[row.key].append(sample)
            progress(f"run {run + 1}/{runs} row {row.key:>2}: {sample.rate:>12,.0f} /s")
    return results


def run_replay(work: Path, events: int, runs: int) -> tuple[dict[str, list[Sample]], bool]:
    root = work / "replay"
    progress(f"replay: writing {events:,} events")
    build_replay_log(root, events)
    log_dir = DataDirPaths(root).log_dir
    out: dict[str, list[Sample]] = {"cold": [], "warm": [], "scan": []}
    dropped = True
    for run in range(runs):
        dropped = drop_caches() and dropped
        out["cold"].append(replay(log_dir, decode=True))
        out["warm"].append(replay(log_dir, decode=True))
        out["scan"].append(replay(log_dir, decode=False))
        progress(f"replay run {run + 1}/{runs}: cold {out['cold'][-1].rate:,.0f} /s")
    shutil.rmtree(root)
    return out, dropped


def run_open(work: Path, b: Bench, target_bytes: int, runs: int) -> dict[str, list[float]]:
    root = work / "big"
    progress(f"open: writing {target_bytes / 2**20:,.0f} MiB of events")
    t0 = time.perf_counter()
    events = build_big_log(root, b, target_bytes)
    build_s = time.perf_counter() - t0
    out: dict[str, list[float]] = {k: [] for k in ("log_cold", "log_warm", "ev_cold", "ev_warm")}
    out["build"] = [events / build_s]
    out["bytes"] = [float(target_bytes)]
    out["segments"] = [float(len(LogReader(DataDirPaths(root).log_dir).segments()))]
    drop_caches()
    out["rebuild"] = [time_event_log(root)]  # no index yet: EventLog rebuilds it
    for run in range(runs):
        drop_caches()
        out["log_cold"].append(time_open_log(root))
        out["log_warm"].append(time_open_log(root))
        drop_caches()
        out["ev_cold"].append(time_event_log(root))
        out["ev_warm"].append(time_event_log(root))
        progress(f"open run {run + 1}/{runs}: open_log cold {out['log_cold'][-1] * 1e3:.1f} ms")
    shutil.rmtree(root)
    return out


# -- printing ---------------------------------------------------------------------------


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def per_event(samples: list[Sample], attr: str) -> float | None:
    """Median over runs of bytes per event: `attr` of the sample, or a key of its `extra`."""
    vals = []
    for s in samples:
        value = s.extra.get(attr) if attr in s.extra else getattr(s, attr, None)
        if value is not None and s.events:
            vals.append(value / s.events)
    return statistics.median(vals) if vals else None


def fmt_bytes(per: float | None, frame: int) -> str:
    return "n/a" if per is None else f"{per:,.1f} ({per / frame:.2f}x)"


def verdict(ok: bool) -> str:
    return "[green]meets[/]" if ok else "[red]misses[/]"


def fs_of(path: Path) -> tuple[str, str]:
    """(fs type, source) of the mount holding `path`, from /proc/self/mountinfo."""
    real, best = str(path.resolve()), ("", "?", "?")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mount = left.split()[4]
        fstype, source = right.split()[:2]
        under = real == mount or real.startswith(mount.rstrip("/") + "/")
        if under and len(mount) >= len(best[0]):
            best = (mount, fstype, source)
    return best[1], best[2]


def print_rows(console: Console, b: Bench, rows: dict[str, list[Sample]]) -> None:
    frame = b.frame_bytes
    rate = {k: med([s.rate for s in v]) for k, v in rows.items()}
    table = Table(title="Durable appends/s (median of runs)", box=box.SIMPLE_HEAVY)
    columns = (
        "row",
        "what",
        "appends/s",
        "min..max",
        "write_bytes/ev",
        "device B/ev",
        "net of idle",
    )
    for col in columns:
        table.add_column(col, justify="left" if col in ("row", "what") else "right")
    for row in ROWS:
        samples = rows.get(row.key)
        if not samples:
            continue
        rates = [s.rate for s in samples]
        refused = sum(s.refused for s in samples)
        what = row.what + (f" [yellow]({refused} refused)[/]" if refused else "")
        table.add_row(
            row.key,
            what,
            f"{rate[row.key]:,.0f}",
            f"{min(rates):,.0f}..{max(rates):,.0f}",
            fmt_bytes(per_event(samples, "proc_bytes"), frame),
            fmt_bytes(per_event(samples, "dev_bytes"), frame),
            fmt_bytes(per_event(samples, "dev_net"), frame),
        )
    console.print(table)
    idle = [s.dev_bytes / s.elapsed_s for s in rows.get(IDLE, []) if s.dev_bytes is not None]
    if idle:
        console.print(
            f"bytes/event as B (x frame of {frame} B); device idle background (this process "
            f"asleep): median {med(idle) / 1e3:,.1f} kB/s, max {max(idle) / 1e3:,.1f} kB/s; "
            "'net of idle' subtracts the same run's idle rate"
        )


def print_targets(
    console: Console,
    b: Bench,
    rows: dict[str, list[Sample]],
    replays: dict[str, list[Sample]] | None,
    cold: bool,
) -> None:
    frame = b.frame_bytes
    rate = {k: med([s.rate for s in v]) for k, v in rows.items() if v}
    checks = Table(title="Targets (issue 2)", box=box.SIMPLE_HEAVY)
    for col in ("comparison", "measured", "target", ""):
        checks.add_column(col, justify="left" if col == "comparison" else "right")

    def ratio(a: str, z: str, target: float | None, label: str) -> None:
        if a in rate and z in rate:
            r = rate[a] / rate[z]
            goal = f">= {target:g}x" if target is not None else "-"
            checks.add_row(label, f"{r:.2f}x", goal, verdict(r >= target) if target else "")

    ratio("4", "1", TARGET_VS_ROW1, "row 4 / row 1")
    ratio("4", "2", TARGET_VS_ROW2, "row 4 / row 2")
    ratio("4", "3", TARGET_VS_ROW3, "row 4 / row 3")
    ratio("4b", "1", TARGET_ALWAYS_VS_ROW1, "row 4b / row 1")
    ratio("4m", "3", 0.7, "row 4m / row 3 (append_many, as the runtime does)")
    ratio("4e", "4", None, "row 4e / row 4 (cost of stamping + encoding)")
    ratio("5", "4", None, "row 5 / row 4 (cost of the runtime)")
    if "4" in rows:
        for attr, label in (
            ("dev_bytes", "device"),
            ("dev_net", "device (net of idle)"),
            ("proc_bytes", "write_bytes"),
        ):
            per = per_event(rows["4"], attr)
            if per is not None:
                ok = per / frame <= TARGET_DEVICE_PER_FRAME
                goal = f"<= {TARGET_DEVICE_PER_FRAME:g}x"
                name = f"row 4 {label} bytes/event / frame"
                checks.add_row(name, f"{per / frame:.2f}x", goal, verdict(ok))
    if replays:
        r = med([s.rate for s in replays["cold"]])
        label = "replay, cold log, decoded" + ("" if cold else " (caches NOT dropped)")
        goal = f">= {TARGET_REPLAY_PER_S:,.0f}/s"
        checks.add_row(label, f"{r:,.0f}/s", goal, verdict(r >= TARGET_REPLAY_PER_S))
    console.print(checks)


def print_other(
    console: Console,
    rows: dict[str, list[Sample]],
    replays: dict[str, list[Sample]] | None,
    opens: dict[str, list[float]] | None,
) -> None:
    other = Table(title="Other figures (median of runs)", box=box.SIMPLE_HEAVY)
    for col in ("figure", "median", "min..max"):
        other.add_column(col, justify="left" if col == "figure" else "right")
    if replays:
        for key, label in (
            ("cold", "replay, cold (caches dropped), read + decode_event"),
            ("warm", "replay, warm, read + decode_event"),
            ("scan", "replay, warm, read only (frames checked, no decode)"),
        ):
            rs = [s.rate for s in replays[key]]
            other.add_row(label, f"{med(rs):,.0f} ev/s", f"{min(rs):,.0f}..{max(rs):,.0f}")
        other.add_row("replay log size", f"{replays['cold'][0].events:,} events", "")
    if opens:
        size = f"{opens['bytes'][0] / 2**30:g} GiB"
        for key, label in (
            ("log_cold", f"open_log on the {size} log, cold"),
            ("log_warm", f"open_log on the {size} log, warm"),
            ("ev_cold", "EventLog open (index exists), cold"),
            ("ev_warm", "EventLog open (index exists), warm"),
            ("rebuild", "EventLog open, index missing (rebuilt by reading all), cold"),
        ):
            xs = [x * 1e3 for x in opens[key]]
            other.add_row(label, f"{med(xs):,.1f} ms", f"{min(xs):,.1f}..{max(xs):,.1f}")
        other.add_row("  (log built at, fsync=never)", f"{opens['build'][0]:,.0f} ev/s", "")
        other.add_row("  (segments in it)", f"{opens['segments'][0]:.0f}", "")
    if rows.get("5"):
        s5 = rows["5"]
        for key, label in (
            ("hwm_before", "VmHWM just before SIGTERM"),
            ("hwm", "VmHWM sampled until exit"),
        ):
            xs = [s.extra[key] / 2**20 for s in s5 if key in s.extra]
            if xs:
                spread = f"{min(xs):.1f}..{max(xs):.1f}"
                other.add_row(f"peak RSS of `pilog run`, {label}", f"{med(xs):.1f} MiB", spread)
        events = [s.extra["events"] for s in s5]
        other.add_row("`pilog run` events in the log per run", f"{med(events):,.0f}", "")
    console.print(other)


def pilog_version() -> str:
    """The commit of the pilog checkout being measured, and whether its tree is dirty."""
    repo = Path(pilog.__file__).resolve().parent.parent
    git = ["git", "--no-optional-locks", "-C", str(repo)]

    def out(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*git, *cmd], check=False, capture_output=True, text=True)

    try:
        head = out("rev-parse", "--short", "HEAD")
        dirty = out("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "?"
    if head.returncode != 0:
        return "? (not a git checkout)"
    changed = len(dirty.stdout.splitlines())
    return head.stdout.strip() + (f" + uncommitted changes in {changed} file(s)" if changed else "")


def print_header(console: Console, b: Bench, work: Path, args: argparse.Namespace) -> None:
    fstype, source = fs_of(work)
    u = platform.uname()
    console.print(f"[bold]pilog log benchmark[/] {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
    console.print(f"pilog at {pilog_version()}")
    console.print(
        f"machine: {u.system} {u.release} {u.machine}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    console.print(
        f"work dir: {work} on {fstype} {source} (block device {b.counters.device_name}, "
        f"{b.counters.dev})"
    )
    console.print(
        f"reference reading: Reading({SENSOR!r}, {SENSOR_TYPE!r}, 3 floats) -> payload "
        f"{len(b.payload)} B, frame {b.frame_bytes} B ({FRAME_HEADER_BYTES} B frame header)"
    )
    console.print(
        f"{args.runs} runs per row, {b.duration_s:g} s each, interleaved; row 5: "
        f"{b.run_sensors} sensors x batch {b.run_batch}, {b.run_seconds:g} s, rate over the "
        "readings' own time stamps"
    )
    console.print(
        "device bytes are machine-wide (other processes' writes count too); "
        "write_bytes is charged per page dirtied, so it overcounts small synced appends"
    )
    if fstype in ("tmpfs", "ramfs"):
        console.print("[red]warning: the work dir is on tmpfs: fsync does not reach a disk[/]")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="a smoke run: short, small, 2 runs")
    p.add_argument("--duration", type=float, help="seconds per row per run (default 3)")
    p.add_argument("--runs", type=int, help="runs per row; the median is printed (default 5)")
    p.add_argument("--dir", type=Path, help="parent of the work dir (default /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--rows", default=",".join(r.key for r in ROWS), help="rows to run: 1,2,...")
    p.add_argument("--replay-events", type=int, help="events in the replay log (default 1M)")
    p.add_argument("--open-bytes", type=int, help="bytes of the log timed on open (1 GiB)")
    p.add_argument("--run-seconds", type=float, help="seconds of each `pilog run` (default 5)")
    p.add_argument("--run-sensors", type=int, default=4, help="synthetic sensors in row 5")
    p.add_argument("--run-batch", type=int, default=100, help="readings per poll in row 5")
    p.add_argument("--no-replay", action="store_true", help="skip the replay measurement")
    p.add_argument("--no-open", action="store_true", help="skip the open-time measurement")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "duration": 0.5 if quick else 3.0,
        "runs": 2 if quick else 5,
        "replay_events": 100_000 if quick else 1_000_000,
        "open_bytes": 64 << 20 if quick else 1 << 30,
        "run_seconds": 2.0 if quick else 5.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


@dataclass
class WorkDir:
    path: Path
    keep: bool

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            progress(f"kept {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def work_dir(parent: Path | None, keep: bool) -> WorkDir:
    """A fresh dir under `parent`, else /var/tmp, else the cwd: never tmpfs if avoidable."""
    if parent is None:
        var_tmp = Path("/var/tmp")
        on_disk = var_tmp.is_dir() and fs_of(var_tmp)[0] not in ("tmpfs", "ramfs")
        parent = var_tmp if on_disk else Path.cwd()
    parent.mkdir(parents=True, exist_ok=True)
    return WorkDir(Path(tempfile.mkdtemp(prefix="pilog-bench-", dir=parent)), keep)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=140, highlight=False)
    keys = [k.strip() for k in args.rows.split(",") if k.strip()]
    with work_dir(args.dir, args.keep) as work:
        record = reference_record()
        b = Bench(
            payload=encode_record(record),
            ts_ns=record.ts_ns,
            duration_s=args.duration,
            counters=DiskCounters(work),
            run_seconds=args.run_seconds,
            run_sensors=args.run_sensors,
            run_batch=args.run_batch,
        )
        print_header(console, b, work, args)
        failures: list[str] = []
        rows = run_rows(work, b, args.runs, keys, failures)
        replays, cold = (
            (None, False) if args.no_replay else run_replay(work, args.replay_events, args.runs)
        )
        opens = None if args.no_open else run_open(work, b, args.open_bytes, args.runs)
        console.print()
        print_rows(console, b, rows)
        print_targets(console, b, rows, replays, cold)
        print_other(console, rows, replays, opens)
        for failure in failures:
            console.print(f"[red]failed:[/] {failure}")
        console.print(f"load avg at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
