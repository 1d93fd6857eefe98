"""SD-card wear: bytes written to storage per event by `pilog run` in steady state.

Run from the repository root:

    .venv/bin/python tools/bench_wear.py                 # 3 runs of 120 s per row
    .venv/bin/python tools/bench_wear.py --rows idle,F,T,FA,TA --trace   # by file (root)

`pilog run` runs as a subprocess on 5 synthetic sensors at 100 ms: 50 readings/s. Rows,
interleaved, the order rotated each run:

    idle   no pilog: what the block device writes anyway in the window (the machine's noise)
    L      the log alone: no sink, no projection (the baseline)
    F      the log, one `http-json` sink to `python -m pilog.testing.receiver` in another
           process, and the `latest` and `rollup` projections, all at their defaults (a 1 s
           sync window with block-aligned commits and zero-ahead, projections every 60 s)
    LT     as L with `fsync_interval_ms = 5000` (`--tuned-fsync-ms`)
    T      as F, for an SD card (docs/operations.md): `fsync_interval_ms = 5000`; the sink
           saves its cursor after every acknowledged batch, as by default
    FA, TA as F and T on an aged data dir: a week of readings (one per sensor and minute)
           appended before the run, so the rollup holds its full retention of windows

After a warm-up (`--warmup`, 10 s: the first segment preallocated, the first commits made,
an aged dir's week folded into the projections), each row counts over `--seconds`:

- `write_bytes` of /proc/PID/io of `pilog run` (every file it writes: segments, the index's
  SQLite WAL, the lmdb projections; charged when a page is dirtied, so a small write synced on
  its own counts a whole page, on recent kernels a whole folio of several pages);
- sectors written by the block device holding the data dir (/sys/dev/block/MAJ:MIN/stat),
  compare it with the idle row;
- with `--trace` (root, tracefs), the device's writes split by file of the data dir: the
  block layer's own record of what it was asked to write, matched to the files' extents, so
  the kernel's writeback of pages nobody synced counts too (`DeviceWrites`);
- the events appended in the window and the bytes of their frames, read back from the log.

The targets, bytes per event with a sink and two projections, on a journaled ext4 of its own
(`--own-fs`): at most 3 x the frame size at the defaults (F), 1.5 x with the SD-card settings
(T).
It prints per-event bytes, their ratio to the mean frame, and F and T against L and LT.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import select
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pilog.config import load_config
from pilog.datadir import EventLog
from pilog.events import Reading
from pilog.log.reader import LogReader
from pilog.testing.clock import FakeClock

SENSORS = 5
INTERVAL_MS = 100  # 5 sensors at 100 ms: 50 readings/s
TUNED_FSYNC_MS = 5000  # rows LT, T (--tuned-fsync-ms): what a power cut may lose
TUNED_COMMIT = "60s"  # row T: projection commits (a crash replays them from the log)
HISTORY_DAYS = 7  # rows ending in "A": a week of readings (1 per sensor and minute) before


def proc_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def device_bytes(directory: Path) -> int | None:
    st = os.stat(directory)
    node = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat")
    return int(node.read_text().split()[6]) * 512 if node.exists() else None


TRACEFS = Path("/sys/kernel/tracing")
# block:block_bio_queue with options/record-tgid, as printed:
# "python-1234 (   1230) [001] ..... 12.5: block_bio_queue: 254,0 WS 6113280 + 8 [python]"
_BIO = re.compile(r"\(\s*(\d+)\)\s+\[\d+\].*block_bio_queue: \d+,\d+ (\S+) (\d+) \+ (\d+) \[(.*)\]")
# filefrag -e -v: "   0:        0..       2:    6113280..   6113282:      3: ..."
_EXTENT = re.compile(r"^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):")
SECTOR_BYTES = 512


class DeviceWrites:
    """What the block device was asked to write during a window, by file of the data dir.

    The kernel's `block:block_bio_queue` tracepoint sees every write the block layer
    receives, whoever issues it (pilog's fdatasync, the kernel's flusher writing back pages
    nobody synced, the journal thread), with its sectors; the files' extents (`filefrag`)
    say whose sectors they are. Sectors of no file of the data dir are the filesystem's
    journal (issued by jbd2), its metadata, or other processes: on a quiet machine, compare
    with the idle row. Needs root and tracefs (`mount -t tracefs nodev /sys/kernel/tracing`).
    """

    def __init__(self, directory: Path, pid: int) -> None:
        st = os.stat(directory)
        self.major, self.minor = os.major(st.st_dev), os.minor(st.st_dev)
        self.pid = pid  # pilog's: what its own syncs write beyond its files is its metadata
        self.bios: list[tuple[int, int, int, str]] = []  # (first sector, sectors, pid, comm)
        self._instance = TRACEFS / "instances" / f"pilog-wear-{os.getpid()}"
        self._thread: threading.Thread | None = None
        self._counting = False

    @staticmethod
    def available() -> bool:
        return (TRACEFS / "instances").is_dir() and os.access(TRACEFS / "instances", os.W_OK)

    def start(self) -> None:
        self._instance.mkdir()
        (self._instance / "buffer_size_kb").write_text("4096")
        (self._instance / "options/record-tgid").write_text("1")  # the process, not thread
        event = self._instance / "events/block/block_bio_queue"
        (event / "filter").write_text(f"dev == {(self.major << 20) | self.minor}")
        (event / "enable").write_text("1")
        self._counting = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # Non-blocking with a timeout: a blocked read of trace_pipe would keep the instance
        # busy (rmdir refuses) after the event is switched off.
        fd = os.open(self._instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        rest = b""
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 0.2)
                try:
                    chunk = os.read(fd, 1 << 16) if ready else b""
                except BlockingIOError:
                    chunk = b""
                if not chunk and not self._counting:
                    return
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    m = _BIO.search(line.decode(errors="replace"))
                    if m is not None and "W" in m[2] and int(m[4]) > 0:
                        self.bios.append((int(m[3]), int(m[4]), int(m[1]), m[5]))
        finally:
            os.close(fd)

    def stop(self) -> None:
        (self._instance / "events/block/block_bio_queue/enable").write_text("0")
        self._counting = False
        assert self._thread is not None
        self._thread.join()
        self._instance.rmdir()

    def by_file(self, data_dir: Path) -> dict[str, int]:
        """Bytes written per file of `data_dir` (segments summed); the rest by issuer."""
        extents: list[tuple[int, int, str]] = []
        for path in sorted(data_dir.rglob("*")):
            if path.is_file():
                rel = path.relative_to(data_dir)
                name = "log/*.seg" if rel.suffix == ".seg" else str(rel)
                extents += [(a, b, name) for a, b in _extents(path)]
        out: collections.Counter[str] = collections.Counter()
        for first, count, pid, comm in self.bios:
            end = first + count
            left = count
            for a, b, name in extents:
                overlap = min(end, b) - max(first, a)
                if overlap > 0:
                    out[name] += overlap * SECTOR_BYTES
                    left -= overlap
            if left > 0:
                out[self._outside(pid, comm)] += left * SECTOR_BYTES
        return dict(out)

    def _outside(self, pid: int, comm: str) -> str:
        """What a write to no file of the data dir is, by who issued it."""
        if pid == self.pid:
            # Issued by pilog's own fdatasync: the inode and extent blocks that a sync of
            # newly written (preallocated, unwritten) space must also make durable.
            return METADATA
        if comm.startswith("jbd2"):
            return "journal (jbd2)"
        if comm.startswith("kworker"):
            return "other (kernel writeback of other files)"
        return f"other ({comm})"


METADATA = "file-system metadata (by pilog's syncs)"


def _extents(path: Path) -> list[tuple[int, int]]:
    """The file's physical extents as [first sector, end sector)."""
    out = subprocess.run(
        ["filefrag", "-e", "-v", str(path)], capture_output=True, text=True, check=False
    ).stdout
    block = 4096
    if m := re.search(r"blocks of (\d+) bytes", out):
        block = int(m[1])
    per = block // SECTOR_BYTES
    return [
        (int(m[1]) * per, (int(m[2]) + 1) * per)
        for line in out.splitlines()
        if (m := _EXTENT.match(line))
    ]


def config_text(data_dir: Path, url: str | None, tuned_fsync_ms: int | None) -> str:
    lines = ['device_id = "wear"', f'data_dir = "{data_dir}"']
    tuned = tuned_fsync_ms is not None
    if tuned:
        lines += ["[log]", f"fsync_interval_ms = {tuned_fsync_ms}"]
    for i in range(SENSORS):
        lines += ["[[sensor]]", f'name = "s{i}"', 'driver = "synthetic"']
        lines += [f"interval_ms = {INTERVAL_MS}"]
    if url is not None:
        lines += ["[[sink]]", 'name = "api"', 'type = "http-json"', f'url = "{url}"']
        for kind in ("latest", "rollup"):
            lines += ["[[projection]]", f'type = "{kind}"']
            if tuned:
                lines += [f'commit_interval = "{TUNED_COMMIT}"']
    return "\n".join(lines) + "\n"


def add_history(config: Path) -> int:
    """Append a week of the benchmark's sensors' readings, one per sensor and minute,
    stamped over the week before now by an earlier boot: an aged data dir, whose rollup
    holds its full retention of windows. Returns the readings appended."""
    minute_ns = 60 * 10**9
    minutes = HISTORY_DAYS * 24 * 60
    clock = FakeClock(time.time_ns() - minutes * minute_ns, 0)
    loaded = load_config(config, {})
    events = EventLog(loaded, clock=clock)
    events.boot_id = os.urandom(16)  # not this boot: its monotonic times are not comparable
    try:
        for m in range(minutes):
            phase = m / 60
            values = {
                "temperature_c": 21.0 + 4.0 * math.sin(phase),
                "humidity_pct": 45.0 + 10.0 * math.cos(phase),
                "pressure_hpa": 1013.25 + 2.0 * math.sin(phase / 3),
            }
            events.append_many([Reading(f"s{i}", "synthetic", values) for i in range(SENSORS)])
            clock.advance(minute_ns)
    finally:
        events.close()
    return minutes * SENSORS


def wait_for_cursors(data_dir: Path, seq: int, timeout_s: float) -> None:
    """Wait until every cursor in the index is at `seq` or past it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            db = sqlite3.connect(f"file:{data_dir / 'index.sqlite'}?mode=ro", uri=True)
            try:
                rows = db.execute("SELECT next_seq FROM cursors").fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            rows = []
        if len(rows) >= 3 and min(r[0] for r in rows) >= seq:  # the sink, two projections
            return
        time.sleep(1.0)
    raise RuntimeError(f"consumers did not reach seq {seq} in {timeout_s:.0f} s")


def frames_since(log_dir: Path, seq: int) -> tuple[int, int, int]:
    """(first seq after `seq`, events, frame bytes) of the log from seq + 1 on."""
    n = size = 0
    first = -1
    for s, payload in LogReader(log_dir).read_from(seq + 1):
        if first < 0:
            first = s
        n += 1
        size += 17 + len(payload)
    return first, n, size


def last_seq(log_dir: Path) -> int:
    last = LogReader(log_dir).last_seq()
    return -1 if last is None else last


def run_row(
    row: str, work: Path, warmup_s: float, seconds: float, tuned_fsync_ms: int, trace: bool
) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix=f"wear-{row}-", dir=work)) / "data"
    data.mkdir()
    if row == "idle":
        dev0 = device_bytes(data)
        time.sleep(seconds)
        dev1 = device_bytes(data)
        return {"dev": float(dev1 - dev0) if dev0 is not None and dev1 is not None else -1.0}
    aged = row.endswith("A")
    kind = row[:-1] if aged else row
    receiver = None
    url = None
    if kind in ("F", "T"):
        cmd = [sys.executable, "-m", "pilog.testing.receiver", "--port", "0"]
        receiver = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert receiver.stdout is not None
        url = receiver.stdout.readline().strip()
    config = data.parent / "pilog.toml"
    tuned = tuned_fsync_ms if kind in ("T", "LT") else None
    config.write_text(config_text(data, url, tuned))
    history = add_history(config) if aged else 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "pilog", "run", "-c", str(config)],
        stderr=subprocess.DEVNULL,
    )
    writes = DeviceWrites(data, proc.pid) if trace else None
    try:
        if history:
            # Not steady state until the week is folded in and committed: with 60 s
            # commits that is the second commit, up to a minute after the start.
            wait_for_cursors(data, history, timeout_s=300)
        time.sleep(warmup_s)
        log_dir = data / "log"
        if writes is not None:
            writes.start()
        seq0, proc0, dev0 = last_seq(log_dir), proc_write_bytes(proc.pid), device_bytes(data)
        time.sleep(seconds)
        seq1, proc1, dev1 = last_seq(log_dir), proc_write_bytes(proc.pid), device_bytes(data)
        if writes is not None:
            writes.stop()
            files = writes.by_file(data)  # while pilog runs: its files are all there
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if receiver is not None:
            receiver.send_signal(signal.SIGTERM)
            receiver.communicate(timeout=30)
    _, events, frame_bytes = frames_since(data / "log", seq0)
    # Only the window's events: those after seq1 were appended while stopping.
    _, after, after_bytes = frames_since(data / "log", seq1)
    events, frame_bytes = events - after, frame_bytes - after_bytes
    dev = float(dev1 - dev0) if dev0 is not None and dev1 is not None else -1.0
    result = {
        "events": float(events),
        "frame": frame_bytes / events,
        "proc": float(proc1 - proc0),
        "dev": dev,
        "rate": events / seconds,
    }
    if writes is not None:
        result |= {f"file:{k}": float(v) for k, v in files.items()}
    return result


def _is_own_file(key: str, own_fs: bool) -> bool:
    """Pilog's part of the device's writes: its files, the metadata its syncs write, and on a
    file system of its own (`--own-fs`) the journal too."""
    if own_fs and key.startswith("file:journal ("):
        return True
    return key.startswith("file:") and not key.startswith(("file:other (", "file:journal ("))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=120.0, help="window: two of T's commits")
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--rows", default="idle,L,F,T", help="of idle,L,F,LT,T; a trailing A (FA, TA): aged"
    )
    p.add_argument("--tuned-fsync-ms", type=int, default=TUNED_FSYNC_MS, help="row T's")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the work dir")
    p.add_argument(
        "--trace",
        action="store_true",
        help="also split the device's bytes by file (root, tracefs: see DeviceWrites)",
    )
    p.add_argument(
        "--own-fs",
        action="store_true",
        help="--dir is a file system of pilog's alone (a loop-mounted ext4 image, journaled "
        "like a Pi's card): its journal's writes count as pilog's",
    )
    args = p.parse_args()
    if args.trace and not DeviceWrites.available():
        p.error(f"--trace needs root and tracefs mounted on {TRACEFS}")
    work = Path(tempfile.mkdtemp(prefix="pilog-bench-wear-", dir=args.dir))
    rows = args.rows.split(",")
    results: dict[str, list[dict[str, float]]] = {r: [] for r in rows}
    for run in range(args.runs):
        for row in rows[run % len(rows) :] + rows[: run % len(rows)]:
            print(f"... run {run + 1}/{args.runs}: {row}", file=sys.stderr, flush=True)
            results[row].append(
                run_row(row, work, args.warmup, args.seconds, args.tuned_fsync_ms, args.trace)
            )

    def med(row: str, key: str) -> float:
        return statistics.median(r[key] for r in results[row])

    idle_dev = med("idle", "dev") if results.get("idle") else float("nan")
    print(
        f"steady state, {SENSORS} synthetic sensors at {INTERVAL_MS} ms, windows of "
        f"{args.seconds:g} s after {args.warmup:g} s, medians of {args.runs} runs"
    )
    print(f"idle: the device wrote {idle_dev / args.seconds / 1024:.1f} KiB/s without pilog")
    per: dict[str, tuple[float, float]] = {}
    labels = {
        "L": "log only, defaults",
        "F": "log + http-json sink + latest + rollup, defaults",
        "LT": f"log only, fsync_interval_ms {args.tuned_fsync_ms}",
        "T": f"as F, fsync_interval_ms {args.tuned_fsync_ms}, projections every {TUNED_COMMIT}",
    }
    for row in [r for r in results if r != "idle" and results[r]]:
        frame = med(row, "frame")
        proc_per = statistics.median(r["proc"] / r["events"] for r in results[row])
        dev_per = statistics.median(r["dev"] / r["events"] for r in results[row])
        per[row] = (proc_per, dev_per)
        label = labels[row.removesuffix("A")]
        if row.endswith("A"):
            label += f", after {HISTORY_DAYS} days of history"
        print(
            f"{row} {label}: {med(row, 'rate'):.1f} events/s, mean frame {frame:.0f} B; "
            f"process writes {proc_per:.0f} B/event ({proc_per / frame:.2f}x frame), device "
            f"{dev_per:.0f} B/event ({dev_per / frame:.2f}x frame)"
        )
        files = sorted({k for r in results[row] for k in r if k.startswith("file:")})
        for key in files:
            per_event = statistics.median(r.get(key, 0.0) / r["events"] for r in results[row])
            print(f"    {key[5:]:<34} {per_event:7.0f} B/event ({per_event / frame:.2f}x frame)")
        if files:
            own = statistics.median(
                sum(v for k, v in r.items() if _is_own_file(k, args.own_fs)) / r["events"]
                for r in results[row]
            )
            label = "= pilog's (files and metadata)"
            print(f"    {label:<34} {own:7.0f} B/event ({own / frame:.2f}x frame)")
    for row, base in (("F", "L"), ("T", "L"), ("T", "LT")):
        if row in per and base in per:
            print(
                f"{row} vs {base}: process bytes {per[row][0] / per[base][0]:.2f}x, "
                f"device bytes {per[row][1] / per[base][1]:.2f}x"
            )
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
