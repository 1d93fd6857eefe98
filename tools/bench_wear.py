"""SD-card wear: bytes written to storage per event by `pilog run` in steady state.

Run from the repository root:

    .venv/bin/python tools/bench_wear.py                 # 3 runs of 120 s per row
    .venv/bin/python tools/bench_wear.py --seconds 20 --runs 1

`pilog run` runs as a subprocess on 5 synthetic sensors at 100 ms: 50 readings/s. Rows,
interleaved, the order rotated each run:

    idle   no pilog: what the block device writes anyway in the window (the machine's noise)
    L      the log alone: no sink, no projection (the baseline)
    F      the log, one `http-json` sink to `python -m pilog.testing.receiver` in another
           process, and the `latest` and `rollup` projections at their defaults
    T      as F, tuned for SD wear: `fsync_interval_ms = 1000`, the sink's
           `cursor_commit_interval` and the projections' `commit_interval` at 60 s

After a warm-up (`--warmup`, 10 s: the first segment preallocated, the first commits made),
each row counts over `--seconds`:

- `write_bytes` of /proc/PID/io of `pilog run` (every file it writes: segments, the index's
  SQLite WAL, the lmdb projections; charged when a page is dirtied, so a small write synced on
  its own counts a whole 4 KiB page);
- sectors written by the block device holding the data dir (/sys/dev/block/MAJ:MIN/stat),
  compare it with the idle row;
- the events appended in the window and the bytes of their frames, read back from the log.

The target: bytes per event with a sink and two projections at most twice the frame size.
It prints per-event bytes, their ratio to the mean frame, and F and T against L.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pilog.log.reader import LogReader

SENSORS = 5
INTERVAL_MS = 100  # 5 sensors at 100 ms: 50 readings/s
TUNED_FSYNC_MS = 1000  # row T (--tuned-fsync-ms): what a power cut may lose, for SD writes
TUNED_COMMIT = "60s"  # row T: sink cursor and projection commits


def proc_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def device_bytes(directory: Path) -> int | None:
    st = os.stat(directory)
    node = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat")
    return int(node.read_text().split()[6]) * 512 if node.exists() else None


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
        if tuned:
            lines += [f'cursor_commit_interval = "{TUNED_COMMIT}"']
        for kind in ("latest", "rollup"):
            lines += ["[[projection]]", f'type = "{kind}"']
            if tuned:
                lines += [f'commit_interval = "{TUNED_COMMIT}"']
    return "\n".join(lines) + "\n"


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
    row: str, work: Path, warmup_s: float, seconds: float, tuned_fsync_ms: int
) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix=f"wear-{row}-", dir=work)) / "data"
    data.mkdir()
    if row == "idle":
        dev0 = device_bytes(data)
        time.sleep(seconds)
        dev1 = device_bytes(data)
        return {"dev": float(dev1 - dev0) if dev0 is not None and dev1 is not None else -1.0}
    receiver = None
    url = None
    if row in ("F", "T"):
        cmd = [sys.executable, "-m", "pilog.testing.receiver", "--port", "0"]
        receiver = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert receiver.stdout is not None
        url = receiver.stdout.readline().strip()
    config = data.parent / "pilog.toml"
    config.write_text(config_text(data, url, tuned_fsync_ms if row == "T" else None))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pilog", "run", "-c", str(config)],
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(warmup_s)
        log_dir = data / "log"
        seq0, proc0, dev0 = last_seq(log_dir), proc_write_bytes(proc.pid), device_bytes(data)
        time.sleep(seconds)
        seq1, proc1, dev1 = last_seq(log_dir), proc_write_bytes(proc.pid), device_bytes(data)
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
    return {
        "events": float(events),
        "frame": frame_bytes / events,
        "proc": float(proc1 - proc0),
        "dev": dev,
        "rate": events / seconds,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=120.0, help="window: two of T's commits")
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rows", default="idle,L,F,T", help="comma-separated, of idle,L,F,T")
    p.add_argument("--tuned-fsync-ms", type=int, default=TUNED_FSYNC_MS, help="row T's")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the work dir")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pilog-bench-wear-", dir=args.dir))
    rows = args.rows.split(",")
    results: dict[str, list[dict[str, float]]] = {r: [] for r in rows}
    for run in range(args.runs):
        for row in rows[run % len(rows) :] + rows[: run % len(rows)]:
            print(f"... run {run + 1}/{args.runs}: {row}", file=sys.stderr, flush=True)
            results[row].append(run_row(row, work, args.warmup, args.seconds, args.tuned_fsync_ms))

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
        "T": f"as F, fsync_interval_ms {args.tuned_fsync_ms}, commits every {TUNED_COMMIT}",
    }
    for row in [r for r in ("L", "F", "T") if results.get(r)]:
        frame = med(row, "frame")
        proc_per = statistics.median(r["proc"] / r["events"] for r in results[row])
        dev_per = statistics.median(r["dev"] / r["events"] for r in results[row])
        per[row] = (proc_per, dev_per)
        label = labels[row]
        print(
            f"{row} {label}: {med(row, 'rate'):.1f} events/s, mean frame {frame:.0f} B; "
            f"process writes {proc_per:.0f} B/event ({proc_per / frame:.2f}x frame), device "
            f"{dev_per:.0f} B/event ({dev_per / frame:.2f}x frame)"
        )
    for row in [r for r in ("F", "T") if r in per and "L" in per]:
        print(
            f"{row} vs L: process bytes {per[row][0] / per['L'][0]:.2f}x, "
            f"device bytes {per[row][1] / per['L'][1]:.2f}x"
        )
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
