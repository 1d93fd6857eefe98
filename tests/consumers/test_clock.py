"""One clock for every consumer: a box that boots in 1970 and is set by NTP later gives each
reading one corrected time, in what the sink receives, in the rollup's windows, in `pilog show
latest`, and in a rebuild of the projections from the log (pilog/consumers/clock.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import WAIT_S, dump_lmdb, pilog, wait_until, write_config

from pilog import runtime as runtime_mod
from pilog.config import Config, parse_config
from pilog.consumers import Consumer, ConsumerGroup
from pilog.consumers.clock import BOOT_ENDED, PLAUSIBLE_AFTER_NS, Step, StepFinder
from pilog.datadir import EventLog
from pilog.events import ClockStep, Reading, rfc3339
from pilog.history import History
from pilog.log.reader import LogReader
from pilog.projections import rebuild
from pilog.projections.consumer import ProjectionConsumer
from pilog.projections.latest.projection import read_latest
from pilog.projections.lmdb_store import ProjectionStore, projections_path
from pilog.runtime import Runtime
from pilog.testing.clock import FakeClock
from pilog.testing.receiver import Receiver

S = 1_000_000_000
BOOT_WALL_NS = 5 * S  # 1970-01-01T00:00:05Z: the clock of a board without RTC
# NTP sets the clock 45 s into a minute: the corrected readings straddle 1-minute windows.
NTP_WALL_NS = PLAUSIBLE_AFTER_NS + 21 * 86400 * S + 45 * S
TICK_NS = S // 2  # the fake clock moves this much per 10 ms of the test (below a step's 1 s)
FIELDS = ("temperature_c", "humidity_pct", "pressure_hpa")


def config_text(data_dir: Path) -> str:
    return f"""
    device_id = "rtcless"
    data_dir = "{data_dir}"
    [log]
    fsync_interval_ms = 5
    [[projection]]
    type = "latest"
    [[projection]]
    type = "rollup"
    windows = ["1m"]
    """


def readings_of(rt: Runtime) -> int:
    health = rt.health.get("air")
    return 0 if health is None else health.readings


async def until(done: Callable[[], bool], clock: FakeClock, what: str) -> None:
    """Let fake time pass, a tick every 10 ms, until `done()`; fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        clock.advance(TICK_NS)
        await asyncio.sleep(0.01)


def run_box(config: Config, rx: Receiver) -> None:
    """`pilog run`'s parts with a fake clock: boot in 1970, readings, NTP, more readings."""
    clock = FakeClock(wall_ns=BOOT_WALL_NS, mono_ns=40 * S)
    events = EventLog(config, clock=clock)
    group = ConsumerGroup.open(config, events)
    rt = Runtime(config, events, clock)

    async def drive() -> None:
        task = asyncio.create_task(rt.run())
        try:
            await until(lambda: readings_of(rt) >= 30, clock, "readings in 1970")
            # The sink holds at the first reading until NTP sets the clock (so do projections).
            sink = group.consumers[0]
            await until(lambda: sink.state.state == "holding", clock, "the sink to hold")
            clock.step_wall(NTP_WALL_NS - clock.wall_ns())
            enough = readings_of(rt) + 300
            await until(lambda: readings_of(rt) >= enough, clock, "readings after NTP")
        finally:
            rt.stop()
            await task

    group.start()
    try:
        asyncio.run(drive())
        events.writer.sync()
        logged = [e for e in History(config.data_dir).events() if isinstance(e.body, Reading)]
        rx.wait_for(len(logged))
    finally:
        group.stop(WAIT_S)
        events.close()


def expected_windows(sent: dict[int, dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """The 1-minute windows of `field` built from what the sink received, by its timestamps."""
    windows: dict[str, dict[str, Any]] = {}
    for seq in sorted(sent):
        obj = sent[seq]
        value = obj["payload"][field]
        start = obj["timestamp"][:17] + "00.000000Z"  # the minute it falls in
        w = windows.setdefault(start, {"start": start, "count": 0, "min": value, "max": value})
        w["count"] += 1
        w["min"] = min(w["min"], value)
        w["max"] = max(w["max"], value)
        w["last"] = value
        w["last_seq"] = seq
        w["last_ts"] = obj["timestamp"]
    return [windows[k] for k in sorted(windows)]


def shown_windows(cfg: Path, field: str) -> list[dict[str, Any]]:
    result = pilog("show", "rollup", "-c", cfg, "--sensor", "air", "--field", field, "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["windows"]
    keep = ("start", "count", "min", "max", "last", "last_seq")
    return [{**{k: r[k] for k in keep}, "last_ts": rfc3339(r["last_ts_ns"])} for r in rows]


def test_sink_rollup_and_latest_agree_on_corrected_times_after_a_boot_in_1970(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_mod, "CLOCK_CHECK_INTERVAL_S", 0.01)
    data_dir = tmp_path / "data"
    with Receiver() as rx:
        sink = f'[[sink]]\nname = "api"\ntype = "http-json"\nurl = "{rx.url}"\nlinger_ms = 20'
        cfg = write_config(
            tmp_path / "pilog.toml",
            data_dir,
            device_id="rtcless",
            log={"fsync_interval_ms": 5},
            sensors=[{"name": "air", "interval_ms": 10}],
            extra=f"{sink}\n"
            '[[projection]]\ntype = "latest"\n[[projection]]\ntype = "rollup"\n'
            'windows = ["1m"]\n',
        )
        config = parse_config(tomllib.loads(cfg.read_text()), str(cfg), {})
        run_box(config, rx)
        sent = {o["seq"]: o for o in rx.events.values()}

    # The log keeps the stamps of 1970; what consumers saw is corrected.
    logged = {e.seq: e for e in History(data_dir).events() if isinstance(e.body, Reading)}
    assert sorted(sent) == sorted(logged)
    early = [s for s, e in logged.items() if e.ts_ns < PLAUSIBLE_AFTER_NS]
    assert len(early) >= 30
    assert min(o["timestamp"] for o in sent.values()) >= rfc3339(PLAUSIBLE_AFTER_NS)
    assert max(sent[s]["timestamp"] for s in early) <= rfc3339(NTP_WALL_NS)

    # Every reading sits in the rollup window of the time the sink received.
    before = {f: shown_windows(cfg, f) for f in FIELDS}
    for field in FIELDS:
        assert before[field] == expected_windows(sent, field)
    assert len(before["temperature_c"]) >= 2

    # `pilog show latest` shows the same time as the sink for the last reading.
    result = pilog("show", "latest", "-c", cfg, "--json")
    assert result.returncode == 0, result.stderr
    for row in json.loads(result.stdout)["values"]:
        assert row["ts"] == sent[row["seq"]]["timestamp"]

    # A rebuild from the log gives the same windows, byte for byte.
    stored = dump_lmdb(data_dir / "projections")
    result = pilog("replay", "-c", cfg, "--projection", "rollup", "--from", "0")
    assert result.returncode == 0, result.stderr
    assert dump_lmdb(data_dir / "projections") == stored
    assert {f: shown_windows(cfg, f) for f in FIELDS} == before


# -- holding, at the consumer level --------------------------------------------------------


class Box:
    """A data dir with projections, written with a fake clock that boots in 1970."""

    def __init__(self, data_dir: Path, clock: FakeClock | None = None) -> None:
        self.config = parse_config(tomllib.loads(config_text(data_dir)), "test.toml", {})
        self.clock = clock or FakeClock(wall_ns=BOOT_WALL_NS, mono_ns=40 * S)
        self.events = EventLog(self.config, clock=self.clock)

    def reading(self, i: int) -> int:
        self.clock.advance(S)
        return self.events.append(Reading("air", "synthetic", {"temperature_c": float(i)}))

    def ntp_sync(self, to_wall_ns: int) -> int:
        before = self.clock.wall_ns()
        self.clock.step_wall(to_wall_ns - before)
        return self.events.append(ClockStep(to_wall_ns - before, before, to_wall_ns))


def latest_of(data_dir: Path) -> dict[str, list[Any]]:
    """The stored `latest` rows by field: [ts_ns, seq]."""
    with (
        ProjectionStore(projections_path(data_dir), readonly=True) as store,
        store.snapshot() as snap,
    ):
        return {r.field: [r.ts_ns, r.seq] for r in read_latest(snap, "latest")}


def folded(c: Consumer) -> int | None:
    assert isinstance(c, ProjectionConsumer)
    return c.runner.next_seq


def test_projections_hold_at_a_reading_of_1970_until_the_clock_step_and_stop_promptly(
    tmp_path: Path,
) -> None:
    box = Box(tmp_path)
    stop = threading.Event()
    consumers = ProjectionConsumer.open_all(box.config, box.events, stop)
    try:
        box.clock.step_wall(NTP_WALL_NS - box.clock.wall_ns())
        box.reading(0)  # an RTC... then the box rebooted without one
        box.events.boot_id = bytes(16)
        box.clock.step_wall(BOOT_WALL_NS - box.clock.wall_ns())
        held = box.reading(1)
        for c in consumers:
            c.start()
        wait_until(lambda: all(c.state.state == "holding" for c in consumers), "a hold")
        stop.set()
        assert all(c.join(WAIT_S) for c in consumers)
    finally:
        box.events.close()
    # The reading before the held one is folded in; the held one is not.
    assert latest_of(tmp_path) == {"temperature_c": [NTP_WALL_NS + S, held - 1]}


def test_a_rebuild_stops_where_pilog_run_holds_and_run_goes_on_after_the_step(
    tmp_path: Path,
) -> None:
    box = Box(tmp_path)
    early = [box.reading(i) for i in range(3)]
    box.events.close()
    assert rebuild(tmp_path, box.config) == {"latest": early[0], "rollup": early[0]}

    box = Box(tmp_path, box.clock)  # pilog started again, in the same boot
    box.clock.advance(2 * S)
    step = box.ntp_sync(NTP_WALL_NS)
    stop = threading.Event()
    consumers = ProjectionConsumer.open_all(box.config, box.events, stop)
    for c in consumers:
        c.start()
    try:
        wait_until(lambda: all(folded(c) == step + 1 for c in consumers), "the step folded in")
    finally:
        stop.set()
        assert all(c.join(WAIT_S) for c in consumers)
        box.events.close()
    # The last early reading was taken 2 s before the step (mono), the first 4 s before.
    assert latest_of(tmp_path) == {"temperature_c": [NTP_WALL_NS - 2 * S, early[-1]]}
    incremental = dump_lmdb(tmp_path / "projections")
    rebuild(tmp_path, box.config)
    assert dump_lmdb(tmp_path / "projections") == incremental


# -- looking ahead for steps ---------------------------------------------------------------


def finder(box: Box) -> StepFinder:
    box.events.writer.sync()
    return StepFinder(LogReader(box.events.paths.log_dir), lambda: box.events.writer.durable_seq)


def test_a_boot_is_seen_to_end_by_a_reader_starting_at_its_last_reading(tmp_path: Path) -> None:
    box = Box(tmp_path)
    try:
        last = [box.reading(i) for i in range(3)][-1]
        boot = box.events.boot_id
        box.events.boot_id = bytes(16)
        box.reading(3)
        assert finder(box).find(boot, last) == BOOT_ENDED
    finally:
        box.events.close()


def test_a_clock_set_back_to_1970_within_a_boot_waits_for_the_next_step(tmp_path: Path) -> None:
    box = Box(tmp_path)
    try:
        early = box.reading(0)
        first = box.ntp_sync(NTP_WALL_NS)
        box.clock.step_wall(BOOT_WALL_NS - box.clock.wall_ns())  # a bad `date -s`
        again = box.reading(1)
        box.clock.advance(S)
        second = box.ntp_sync(NTP_WALL_NS + 60 * S)
        steps = finder(box)
        found = [steps.find(box.events.boot_id, seq) for seq in (early, again)]
        assert [f.seq if isinstance(f, Step) else f for f in found] == [first, second]
    finally:
        box.events.close()
