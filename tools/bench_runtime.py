"""Throughput, scheduling jitter and idle cost of `pilog run`, as a subprocess.

Issue 3, "Performance". Run from the repository root:

    .venv/bin/python tools/bench_runtime.py            # 3 runs per row, medians
    .venv/bin/python tools/bench_runtime.py --quick    # a smoke run

1   events/s with N synthetic sensors at interval_ms = 0, batch = 10: events are counted by
    reading the log back after SIGTERM; the rate is over the readings' own ts_ns span.
2   |interval - 100 ms| of a 100 ms synthetic sensor, from its readings' mono_ns, with a
    flooding sensor (interval_ms = 0, batch = 100) beside it and without (the baseline).
3   CPU% of one core (utime + stime from /proc/PID/stat) and RSS (VmRSS, VmHWM) of `pilog run`
    with the embedded default config, idling for --idle-seconds after a 3 s warm-up. The issue
    asks for a minute; the default here is 30 s. Targets: < 2% of one core, < 40 MiB.

Every run gets a fresh dir under /var/tmp; PILOG_* variables are removed from the child's env.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from pilog.events import Reading
from pilog.history import History

STOP_TIMEOUT_S = 30.0
WARMUP_S = 3.0
JITTER_INTERVAL_MS = 100
FLOOD_BATCH = 100
THROUGHPUT_BATCH = 10
TARGET_CPU_PCT = 2.0
TARGET_RSS_MIB = 40.0
MiB = 1 << 20


# -- the subprocess ---------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """This environment without PILOG_* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PILOG_")}


def work_dir(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="pilog-bench-runtime-", dir=parent))


def start(work: Path, config: Path | None) -> subprocess.Popen[bytes]:
    """`pilog run` in `work`; with `config` None, the embedded default (no file, no env)."""
    cmd = [sys.executable, "-m", "pilog", "run"]
    if config is not None:
        cmd += ["-c", str(config)]
    with (work / "run.log").open("wb") as stderr:
        return subprocess.Popen(
            cmd,
            cwd=work,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def stop(proc: subprocess.Popen[bytes], work: Path) -> None:
    """SIGTERM `proc` and reap it (SIGKILL after a timeout); raise unless it exited 0."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if code != 0:
        tail = (work / "run.log").read_text(errors="replace").splitlines()[-3:]
        raise RuntimeError(f"`pilog run` exited {code} after SIGTERM: {' | '.join(tail)}")


def run_for(work: Path, config_text: str, seconds: float) -> Path:
    """Write `config_text`, run `pilog run -c` on it for `seconds`, stop it; the data dir."""
    config = work / "pilog.toml"
    config.write_text(config_text)
    proc = start(work, config)
    time.sleep(seconds)
    stop(proc, work)
    return work / "data"


def config_text(data_dir: Path, sensors: Sequence[tuple[str, int, int]]) -> str:
    """A config with (name, interval_ms, batch) synthetic sensors."""
    lines = [
        'device_id = "bench"',
        f'data_dir = "{data_dir}"',
        "",
        "[log]",
        'fsync = "interval"',
        "fsync_interval_ms = 100",
        f"max_bytes = {64 << 30}",
    ]
    for name, interval_ms, batch in sensors:
        lines += ["", "[[sensor]]", f'name = "{name}"', 'driver = "synthetic"']
        lines += [f"interval_ms = {interval_ms}", f"batch = {batch}"]
    return "\n".join(lines) + "\n"


# -- 1: throughput ----------------------------------------------------------------------


def throughput(parent: Path, sensors: int, seconds: float) -> tuple[float, int]:
    """(readings/s, readings) of one run with `sensors` flat-out synthetic sensors."""
    work = work_dir(parent)
    try:
        specs = [(f"syn-{i}", 0, THROUGHPUT_BATCH) for i in range(sensors)]
        data = run_for(work, config_text(work / "data", specs), seconds)
        n = 0
        first = last = 0
        for event in History(data).events(0):
            if isinstance(event.body, Reading):
                first = first or event.ts_ns
                last = event.ts_ns
                n += 1
        return (n / ((last - first) / 1e9) if last > first else 0.0), n
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- 2: jitter --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Jitter:
    """|interval - nominal| of one run's 100 ms sensor, in ms; polls missed."""

    median: float
    p95: float
    p99: float
    max: float
    missed: int
    polls: int


def jitter_of(monos: list[int], interval_ms: int) -> Jitter:
    nominal = interval_ms * 1_000_000
    gaps = [b - a for a, b in itertools.pairwise(monos)]
    devs = sorted(abs(g - nominal) / 1e6 for g in gaps) or [0.0]
    missed = sum(max(round(g / nominal) - 1, 0) for g in gaps)
    return Jitter(
        statistics.median(devs),
        percentile(devs, 0.95),
        percentile(devs, 0.99),
        devs[-1],
        missed,
        len(monos),
    )


def percentile(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, min(len(sorted_xs), round(q * len(sorted_xs) + 0.5)))
    return sorted_xs[rank - 1]


def jitter(parent: Path, flood: bool, seconds: float) -> Jitter:
    work = work_dir(parent)
    try:
        specs = [("tick", JITTER_INTERVAL_MS, 1)]
        if flood:
            specs.append(("flood", 0, FLOOD_BATCH))
        data = run_for(work, config_text(work / "data", specs), seconds)
        monos = [
            e.mono_ns
            for e in History(data).events(0)
            if isinstance(e.body, Reading) and e.body.sensor == "tick"
        ]
        return jitter_of(monos, JITTER_INTERVAL_MS)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- 3: idle cost -----------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of `pid`, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


@dataclass(frozen=True, slots=True)
class Idle:
    cpu_pct: float
    rss_mib: float
    hwm_mib: float
    seconds: float


def idle(parent: Path, seconds: float) -> Idle:
    """`pilog run` with the embedded default config, cwd an empty dir, idling."""
    work = work_dir(parent)
    try:
        proc = start(work, None)
        time.sleep(WARMUP_S)
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0 = time.monotonic(), cpu_ticks(proc.pid)
        time.sleep(seconds)
        t1, c1 = time.monotonic(), cpu_ticks(proc.pid)
        rss, hwm = status_kib(proc.pid, "VmRSS"), status_kib(proc.pid, "VmHWM")
        stop(proc, work)
        cpu = 100.0 * (c1 - c0) / hz / (t1 - t0)
        return Idle(cpu, rss / 1024, hwm / 1024, t1 - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- report -----------------------------------------------------------------------------


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def print_throughput(
    console: Console, rates: dict[int, list[tuple[float, int]]], seconds: float
) -> None:
    t = Table(
        title=f"1. `pilog run` throughput, synthetic interval_ms = 0, batch = {THROUGHPUT_BATCH}, "
        f"{seconds:g} s per run",
        box=box.SIMPLE_HEAVY,
    )
    for col in ("sensors", "median events/s", "min..max", "readings in log", "runs"):
        t.add_column(col, justify="right")
    for sensors, samples in rates.items():
        rs = [r for r, _ in samples]
        counts = f"{med([n for _, n in samples]):,.0f}"
        t.add_row(
            str(sensors), f"{med(rs):,.0f}", f"{min(rs):,.0f}..{max(rs):,.0f}", counts, str(len(rs))
        )
    console.print(t)


def print_jitter(console: Console, runs: dict[str, list[Jitter]], seconds: float) -> None:
    t = Table(
        title=f"2. jitter of a {JITTER_INTERVAL_MS} ms synthetic sensor, |interval - "
        f"{JITTER_INTERVAL_MS} ms| in ms, {seconds:g} s per run (medians of runs)",
        box=box.SIMPLE_HEAVY,
    )
    for col in ("case", "median", "p95", "p99", "max", "missed polls", "polls", "runs"):
        t.add_column(col, justify="left" if col == "case" else "right")
    for case, js in runs.items():
        t.add_row(
            case,
            f"{med([j.median for j in js]):.3f}",
            f"{med([j.p95 for j in js]):.3f}",
            f"{med([j.p99 for j in js]):.3f}",
            f"{med([j.max for j in js]):.3f}",
            f"{med([j.missed for j in js]):g} (max {max(j.missed for j in js)})",
            f"{med([j.polls for j in js]):g}",
            str(len(js)),
        )
    console.print(t)


def print_idle(console: Console, r: Idle) -> None:
    t = Table(
        title=f"3. idle `pilog run`, embedded default config, {r.seconds:.1f} s after a "
        f"{WARMUP_S:g} s warm-up (the issue asks for a minute)",
        box=box.SIMPLE_HEAVY,
    )
    for col in ("figure", "value", "target", "verdict"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    t.add_row(
        "CPU, % of one core",
        f"{r.cpu_pct:.2f}%",
        f"< {TARGET_CPU_PCT:g}%",
        ok(r.cpu_pct < TARGET_CPU_PCT),
    )
    t.add_row(
        "VmRSS at the end",
        f"{r.rss_mib:.1f} MiB",
        f"< {TARGET_RSS_MIB:g} MiB",
        ok(r.rss_mib < TARGET_RSS_MIB),
    )
    t.add_row(
        "VmHWM (peak RSS)",
        f"{r.hwm_mib:.1f} MiB",
        f"< {TARGET_RSS_MIB:g} MiB",
        ok(r.hwm_mib < TARGET_RSS_MIB),
    )
    console.print(t)


def ok(good: bool) -> str:
    return "[green]met[/]" if good else "[red]missed[/]"


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="a smoke run: short, 1 run")
    p.add_argument("--runs", type=int, help="runs per row; medians printed (default 3)")
    p.add_argument("--seconds", type=float, help="seconds of each `pilog run` (default 3)")
    p.add_argument("--jitter-seconds", type=float, help="seconds of each jitter run (default 5)")
    p.add_argument("--idle-seconds", type=float, help="idle window after warm-up (default 30)")
    p.add_argument("--sensors", default="1,10,50", help="sensor counts of row 1")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of work dirs")
    args = p.parse_args(argv)
    defaults = {
        "runs": 1 if args.quick else 3,
        "seconds": 1.5 if args.quick else 3.0,
        "jitter_seconds": 2.0 if args.quick else 5.0,
        "idle_seconds": 3.0 if args.quick else 30.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def progress(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=140, highlight=False)
    counts = [int(x) for x in args.sensors.split(",") if x.strip()]
    u = platform.uname()
    console.print(f"[bold]pilog runtime benchmark[/] {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
    console.print(
        f"machine: {u.system} {u.release} {u.machine}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    rates: dict[int, list[tuple[float, int]]] = {n: [] for n in counts}
    jitters: dict[str, list[Jitter]] = {"baseline (alone)": [], "flooded": []}
    for run in range(args.runs):  # interleaved: each run does every case once
        for n in counts:
            progress(f"run {run + 1}/{args.runs}: throughput, {n} sensors")
            rates[n].append(throughput(args.dir, n, args.seconds))
        for case, flood in (("baseline (alone)", False), ("flooded", True)):
            progress(f"run {run + 1}/{args.runs}: jitter, {case}")
            jitters[case].append(jitter(args.dir, flood, args.jitter_seconds))
    progress(f"idle: {WARMUP_S:g} s warm-up + {args.idle_seconds:g} s")
    idle_result = idle(args.dir, args.idle_seconds)
    print_throughput(console, rates, args.seconds)
    print_jitter(console, jitters, args.jitter_seconds)
    print_idle(console, idle_result)
    console.print(f"load avg at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
