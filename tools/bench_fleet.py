"""A fleet on one machine: N `pilog run` processes into one engine, with kills and an outage.

Issue 14, "Fleet shape". Run from the repository root:

    .venv/bin/python tools/bench_fleet.py --engine postgres --devices 50
    .venv/bin/python tools/bench_fleet.py --engine nats --devices 50
    .venv/bin/python tools/bench_fleet.py --engine receiver --devices 10 --quick   # a smoke run

Each device is a real `pilog run` (its own data dir, device id `fleet-NNNN`, `--sensors`
synthetic sensors every `--interval-ms`) whose one sink points at the engine. A run has phases:

    steady   every device runs; readings/s into the engine and end-to-end delay
    kills    one device every `--kill-every` s gets SIGKILL and is started again at once
    outage   the engine is stopped for `--outage` s (SIGKILL), then started again: the devices
             keep logging and retry; the catch-up rate is what the engine takes afterwards
    drain    the expected set is fixed (every reading each device's log holds at that moment);
             the run waits until the engine holds all of them, then stops the devices

Figures: readings/s into the engine (steady, and the best second of catch-up), the end-to-end
delay (engine store time minus the reading's timestamp; median and p99 of the steady phase),
readings missing and readings stored twice (both must be 0), and the devices' CPU per reading
(utime + stime of every `pilog run`, kills included, over the readings they logged).

The engine stores every copy it is sent with its own store time: `receiver` (the http-json
test receiver, run as a process; no outage phase: its de-duplication is in memory), `nats` (a
3-node JetStream cluster, `pilog.testing.nats`) and `postgres` (`pilog.testing.postgres`).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from rich import box
from rich.console import Console
from rich.table import Table

from pilog.events import Reading, event_id
from pilog.history import History
from pilog.testing.nats import NatsCluster
from pilog.testing.postgres import PostgresServer

CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0
POLL_S = 0.5
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Engine(Protocol):
    """Where the fleet's readings go; stores every copy sent, with its own store time."""

    name: str

    def start(self) -> None: ...

    def sink_toml(self) -> str:
        """The `[[sink]]` table every device uses (`{device_id}` may appear in it)."""
        ...

    def stored(self) -> list[tuple[str, float]]:
        """(event id, store time in unix seconds, NaN if unknown) of every copy it holds."""
        ...

    def count(self) -> int:
        """How many copies it holds; cheap, sampled every second."""
        ...

    def kill(self) -> None:
        """Stop at once (SIGKILL), keeping what it stored."""
        ...

    def close(self) -> None: ...


class ReceiverEngine:
    """`python -m pilog.testing.receiver` in its own process, every copy dumped to a file."""

    name = "receiver"

    def __init__(self, work: Path) -> None:
        self.dump = work / "receiver.ndjson"
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.duplicates = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pilog.testing.receiver", "--port=0", f"--dump={self.dump}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def sink_toml(self) -> str:
        return "\n".join(
            ["[[sink]]", 'name = "fleet"', 'type = "http-json"', f'url = "{self.url}"']
        )

    def stored(self) -> list[tuple[str, float]]:
        # The receiver keeps (and dumps) the first copy of each id and counts the others; it
        # records no store time per reading, so this engine gives no delay figure.
        with _NO_PROXY.open(urllib.parse.urljoin(self.url, "/_stats"), timeout=10) as r:
            self.duplicates = int(json.load(r)["duplicates"])
        if not self.dump.exists():
            return []
        return [
            (json.loads(line)["id"], float("nan")) for line in self.dump.read_text().splitlines()
        ]

    def count(self) -> int:
        with _NO_PROXY.open(urllib.parse.urljoin(self.url, "/_stats"), timeout=10) as r:
            return int(json.load(r)["raw_count"])

    def kill(self) -> None:
        raise NotImplementedError("the receiver's de-duplication is in memory: no outage phase")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


class NatsEngine:
    """A 3-node JetStream cluster (`pilog.testing.nats`), stream FLEET on `fleet.>`, 3 replicas.

    The outage kills all three nodes with SIGKILL; store time is each message's JetStream
    timestamp (when the stream leader stored it)."""

    name = "nats"
    stream = "FLEET"

    def __init__(self, work: Path) -> None:
        self.dir = work / "nats"
        self.cluster: NatsCluster | None = None

    def start(self) -> None:
        if self.cluster is None:
            self.cluster = NatsCluster.start(self.dir, nodes=3)
            self.cluster.add_stream(self.stream, ["fleet.>"], duplicate_window=120.0)
        else:
            self.cluster.restart()

    def sink_toml(self) -> str:
        assert self.cluster is not None
        return "\n".join(
            [
                "[[sink]]",
                'name = "fleet"',
                'type = "nats"',
                f'url = "{",".join(self.cluster.urls)}"',
                'subject = "fleet.{device_id}"',
                f'stream = "{self.stream}"',
            ]
        )

    def stored(self) -> list[tuple[str, float]]:
        assert self.cluster is not None
        stream = self.stream

        async def read(js: Any) -> list[tuple[str, float]]:
            info = await js.stream_info(stream)
            out: list[tuple[str, float]] = []
            if info.state.messages == 0:
                return out
            last = info.state.last_seq
            sub = await js.subscribe(
                ">", stream=stream, ordered_consumer=True, pending_msgs_limit=-1
            )
            try:
                while True:
                    msg = await sub.next_msg(timeout=30)
                    stamp = msg.metadata.timestamp.timestamp()
                    out.append(((msg.headers or {}).get("Nats-Msg-Id", ""), stamp))
                    if msg.metadata.sequence.stream >= last:
                        return out
            finally:
                await sub.unsubscribe()

        return self.cluster._retrying(read, f"read stream {stream}")

    def count(self) -> int:
        assert self.cluster is not None
        return self.cluster.message_count(self.stream)

    def kill(self) -> None:
        assert self.cluster is not None
        for node in self.cluster.nodes:
            self.cluster.kill(node)

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()


class PostgresEngine:
    """A PostgreSQL server (`pilog.testing.postgres`), the sink's default table.

    The outage is `kill -9` of the postmaster and its backends; store time is the row's
    `received_at` (the inserting transaction's start)."""

    name = "postgres"
    user, password = "fleet", "fleet-pw"

    def __init__(self, work: Path, devices: int) -> None:
        self.work = work
        self.devices = devices
        self.server: PostgresServer | None = None
        self.has_table = False
        self.password_file = work / "pg-password"

    def start(self) -> None:
        if self.server is not None:
            self.server.start()
            return
        # Its own temporary home: the cluster runs as another user, who cannot enter `work`.
        self.server = PostgresServer.create()
        # A server's settings rather than a test's: durable commits, a connection per device.
        self.server.configure(
            fsync="on",
            full_page_writes="on",
            shared_buffers="128MB",
            max_connections=str(self.devices + 20),
        )
        self.server.start()
        self.server.sql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.server.sql(f"CREATE DATABASE fleet OWNER {self.user}")
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)

    def sink_toml(self) -> str:
        assert self.server is not None
        return "\n".join(
            [
                "[[sink]]",
                'name = "fleet"',
                'type = "postgres"',
                f'url = "{self.server.url(self.user, "fleet")}"',
                f'password_file = "{self.password_file}"',
            ]
        )

    def _rows(self, statement: str) -> list[tuple[Any, ...]]:
        assert self.server is not None
        # The first device to connect creates the table; once there, it stays.
        if not self.has_table:
            query = "SELECT to_regclass('pilog_readings')"
            self.has_table = bool(self.server.sql(query, dbname="fleet")[0][0])
            if not self.has_table:
                return []
        return self.server.sql(statement, dbname="fleet")

    def stored(self) -> list[tuple[str, float]]:
        rows = self._rows("SELECT id, extract(epoch FROM received_at) FROM pilog_readings")
        return [(str(i), float(t)) for i, t in rows]

    def count(self) -> int:
        rows = self._rows("SELECT count(*) FROM pilog_readings")
        return int(rows[0][0]) if rows else 0

    def kill(self) -> None:
        assert self.server is not None
        self.server.kill()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@dataclass
class Device:
    name: str
    data_dir: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    cpu_done_s: float = 0.0  # CPU of its earlier (killed) processes
    cpu_last_s: float = 0.0  # CPU of the current process at the last sample
    kills: int = 0
    log: Path = field(default_factory=Path)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PILOG_")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pilog", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.cpu_last_s = 0.0

    def sample_cpu(self) -> None:
        if self.proc is None:
            return
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        self.cpu_last_s = (int(fields[11]) + int(fields[12])) / CLK_TCK

    def kill(self) -> None:
        assert self.proc is not None
        self.sample_cpu()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.cpu_done_s += self.cpu_last_s
        self.kills += 1

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.sample_cpu()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.cpu_done_s += self.cpu_last_s

    @property
    def cpu_s(self) -> float:
        return self.cpu_done_s + self.cpu_last_s

    def readings(self) -> dict[str, int]:
        """Event id → timestamp (ns) of every reading in the device's log now."""
        history = History(self.data_dir)
        header = history.header()
        if header is None:
            return {}
        out = {}
        for event in history.events(0):
            if isinstance(event.body, Reading):
                out[event_id(header.device_id, header.epoch.hex(), event.seq)] = event.ts_ns
        return out


def device_config(dev: Device, args: argparse.Namespace, sink: str) -> str:
    lines = [
        f'device_id = "{dev.name}"',
        f'data_dir = "{dev.data_dir}"',
        "[log]",
        'fsync = "interval"',
        "fsync_interval_ms = 1000",
    ]
    for i in range(args.sensors):
        lines += [
            "[[sensor]]",
            f'name = "s{i}"',
            'driver = "synthetic"',
            f"interval_ms = {args.interval_ms}",
        ]
    lines += [sink.replace("{device_id}", dev.name)]
    lines += [f"linger_ms = {args.linger_ms}", "retry_max = 5"]
    return "\n".join(lines) + "\n"


def open_engine(name: str, work: Path, devices: int) -> Engine:
    engines: dict[str, Callable[[], Engine]] = {
        "receiver": lambda: ReceiverEngine(work),
        "nats": lambda: NatsEngine(work),
        "postgres": lambda: PostgresEngine(work, devices),
    }
    if name not in engines:
        raise SystemExit(f"unknown engine {name!r}; this build knows: {', '.join(engines)}")
    return engines[name]()


def count_or_zero(engine: Engine) -> int:
    try:
        return engine.count()
    except Exception:  # still recovering from the outage
        return 0


def wait_all_started(devices: Iterable[Device]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    for dev in devices:
        while not (dev.data_dir / "control.sock").exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"{dev.name} did not start; see {dev.log}")
            time.sleep(0.1)


def fleet_cpu(devices: list[Device]) -> float:
    for dev in devices:
        dev.sample_cpu()
    return sum(dev.cpu_s for dev in devices)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Sampler(threading.Thread):
    """(unix time, engine count) every second, while the run lasts; failures while the
    engine is down are skipped."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            with contextlib.suppress(Exception):
                self.samples.append((time.time(), self.engine.count()))

    def rate(self, t0: float, t1: float) -> tuple[float, float]:
        """Mean readings/s stored in [t0, t1], and the best interval between samples."""
        inside = [(t, n) for t, n in self.samples if t0 <= t <= t1]
        if len(inside) < 2:
            return 0.0, 0.0
        best = max((n2 - n1) / (t2 - t1) for (t1, n1), (t2, n2) in itertools.pairwise(inside))
        (ta, na), (tb, nb) = inside[0], inside[-1]
        return (nb - na) / (tb - ta), best


def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="pilog-fleet-", dir=args.work_dir))
    engine = open_engine(args.engine, work, args.devices)
    devices: list[Device] = []
    phases: dict[str, tuple[float, float]] = {}
    rng = random.Random(args.seed)
    sampler = Sampler(engine)
    try:
        engine.start()
        sink = engine.sink_toml()
        for i in range(args.devices):
            name = f"fleet-{i:04d}"
            dev = Device(name, work / name, work / f"{name}.toml", log=work / f"{name}.log")
            dev.config.write_text(device_config(dev, args, sink))
            devices.append(dev)
            dev.start()
        wait_all_started(devices)
        sampler.start()

        time.sleep(args.warmup)  # past the start-up CPU of every process
        cpu0 = fleet_cpu(devices)
        t = time.time()
        time.sleep(args.steady)
        phases["steady"] = (t, time.time())
        steady_cpu_s = fleet_cpu(devices) - cpu0

        t = time.time()
        end = time.monotonic() + args.kills_for
        while time.monotonic() < end:
            for dev in devices:
                dev.sample_cpu()
            victim = rng.choice(devices)
            victim.kill()
            victim.start()
            time.sleep(args.kill_every)
        phases["kills"] = (t, time.time())

        if args.outage > 0 and args.engine != "receiver":
            t = time.time()
            engine.kill()
            time.sleep(args.outage)
            engine.start()
            phases["outage"] = (t, time.time())
            t = time.time()
            time.sleep(args.recovery)
            phases["recovery"] = (t, time.time())

        for dev in devices:
            dev.sample_cpu()
        expected: dict[str, int] = {}
        for dev in devices:
            expected.update(dev.readings())
        t = time.time()
        deadline = time.monotonic() + args.drain_timeout
        while True:
            for dev in devices:
                dev.sample_cpu()
            # Reading every copy back is slow (a stream read message by message): only once
            # the engine could hold them all, or at the deadline.
            late = time.monotonic() > deadline
            if not late and count_or_zero(engine) < len(expected):
                time.sleep(POLL_S * 4)
                continue
            stored = engine.stored()
            have = {i for i, _ in stored}
            missing = len(expected.keys() - have)
            if missing == 0 or late:
                break
            time.sleep(POLL_S * 4)
        phases["drain"] = (t, time.time())
    finally:
        sampler.stop.set()
        for dev in devices:
            dev.stop()
        engine.close()

    produced = sum(len(dev.readings()) for dev in devices)
    copies = Counter(i for i, _ in stored)
    store_time = {i: ts for i, ts in stored}
    duplicates = sum(n - 1 for n in copies.values() if n > 1) + getattr(engine, "duplicates", 0)
    t0, t1 = phases["steady"]
    steady_readings = sum(t0 <= ts_ns / 1e9 < t1 for ts_ns in expected.values())
    delays = [
        store_time[i] - ts_ns / 1e9
        for i, ts_ns in expected.items()
        if i in store_time and t0 <= ts_ns / 1e9 < t1 and store_time[i] == store_time[i]
    ]
    result: dict[str, object] = {
        "engine": engine.name,
        "devices": args.devices,
        "offered_per_s": args.devices * args.sensors * 1000 / args.interval_ms,
        "steady_per_s": sampler.rate(t0, t1)[0],
        "delay_median_s": statistics.median(delays) if delays else float("nan"),
        "delay_p99_s": pct(delays, 0.99),
        "expected": len(expected),
        "missing": missing,
        "duplicates": duplicates,
        "produced": produced,
        "kills": sum(dev.kills for dev in devices),
        "steady_cpu_us_per_reading": 1e6 * steady_cpu_s / max(steady_readings, 1),
        "steady_cpu_pct_per_device": 100 * steady_cpu_s / (t1 - t0) / len(devices),
        "all_cpu_us_per_reading": 1e6 * sum(d.cpu_s for d in devices) / max(produced, 1),
        "drain_s": phases["drain"][1] - phases["drain"][0],
    }
    if "recovery" in phases:
        mean, best = sampler.rate(*phases["recovery"])
        result["catch_up_per_s"] = mean
        result["catch_up_best_second"] = best
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result["work"] = str(work)
    return result


def print_result(console: Console, r: dict[str, object]) -> None:
    table = Table(box=box.SIMPLE, title=f"fleet into {r['engine']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in r.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    console.print(table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=["receiver", "nats", "postgres"], default="receiver")
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--sensors", type=int, default=3)
    p.add_argument("--interval-ms", type=int, default=1000)
    p.add_argument("--linger-ms", type=int, default=200)
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    p.add_argument("--steady", type=float, default=60.0, help="seconds")
    p.add_argument("--kills-for", type=float, default=60.0, help="seconds of the kills phase")
    p.add_argument("--kill-every", type=float, default=2.0, help="seconds between kills")
    p.add_argument("--outage", type=float, default=30.0, help="seconds the engine is down")
    p.add_argument("--recovery", type=float, default=30.0, help="seconds after the outage")
    p.add_argument("--drain-timeout", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work-dir", default="/var/tmp")
    p.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    p.add_argument("--quick", action="store_true", help="a smoke run: 10 s phases")
    args = p.parse_args(argv)
    if args.quick:
        args.steady = args.kills_for = args.outage = args.recovery = 10.0
        args.warmup = 3.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    console.print(
        f"pilog fleet bench: {platform.machine()}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.2f}, {datetime.now().isoformat(timespec='seconds')}"
    )
    r = run(args)
    print_result(console, r)
    return 0 if r["missing"] == 0 and r["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
