"""One `pilog run`: the log, the drivers, the consumers, and the ways in from outside.

`run(config)` wires the `EventLog`, the `ConsumerGroup` and the `Runtime`, serves the control
socket and `/metrics` (both from one `RunSnapshot`, `pilog.runstate`), handles SIGTERM/SIGINT
and talks to systemd; `pilog run` only resolves the config and calls it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import msgspec

from pilog.cli.common import human_bytes
from pilog.clock import SystemClock
from pilog.config import Config
from pilog.consumers import ConsumerGroup
from pilog.control import (
    SOCKET_NAME,
    ControlServer,
    ErrorAnswer,
    Request,
    RetryAnswer,
    RetryRequest,
    StatusRequest,
)
from pilog.counts import counted
from pilog.datadir import EventLog
from pilog.durability import durability
from pilog.ephemeral import check_owner
from pilog.errors import ConfigError, DataDirError, LogError
from pilog.log import naming
from pilog.log.reader import Progress
from pilog.metrics import MetricsServer, render_snapshot
from pilog.mounts import mount_of
from pilog.runstate import (
    ClockView,
    DriverView,
    DurabilityView,
    OldestCache,
    RunSnapshot,
    WriterView,
    consumer_views,
)
from pilog.runtime import Runtime, load_drivers
from pilog.systemd import Notifier

log = logging.getLogger("pilog")

CONSUMER_STOP_S = 3.0  # of the 10 s a stop may take; a sink mid-request is abandoned after it


def run(config: Config, index_progress: Progress | None = None) -> None:
    """Open the data dir, run every sensor, and on a stop signal flush, fsync and return."""
    os.umask(os.umask(0o027) | 0o027)  # files 0640, dirs 0750: group pilog reads, others nothing
    # Before anything is logged: a stop sent on seeing the first line must not kill us.
    early_stop = _catch_early_stop()
    load_drivers(config)  # a bad sensor is a config error: refuse before touching the data dir
    check_data_dir_mount(config)
    clock = SystemClock()
    events = EventLog(config, clock=clock, index_progress=index_progress)
    consumers = None
    try:
        consumers = ConsumerGroup.open(config, events)
        writer = events.writer
        log.info(
            "pilog running: %s, data in %s, next seq %d, fsync=%s (config: %s)",
            counted(len(config.sensor), "sensor"),
            Path(config.data_dir).resolve(),
            writer.next_seq,
            config.log.fsync,
            config.source,
        )
        window = durability(config)
        log.info("durability: %s", window.summary())
        if window.advice:
            log.warning("durability: %s", window.advice)
        consumers.start()
        asyncio.run(_serve(config, events, clock, consumers, early_stop))
    finally:
        if consumers is not None:
            # Drivers are stopped: make what they appended durable, let consumers commit
            # what their receivers acknowledged, then close the log.
            _sync_quietly(events)
            consumers.stop(CONSUMER_STOP_S)
        events.close()
    log.info("pilog stopped: log synced up to seq %d", events.writer.durable_seq)


class LiveState:
    """The running objects, seen from outside: snapshots and operator requests."""

    def __init__(self, events: EventLog, runtime: Runtime, consumers: ConsumerGroup) -> None:
        self.events = events
        self.runtime = runtime
        self.consumers = consumers
        self.started_ns = time.time_ns()
        self.durability = DurabilityView.of(durability(events.config))
        self._oldest: dict[str, OldestCache] = {}

    def snapshot(self) -> RunSnapshot:
        """Everything `pilog status` and `/metrics` show, taken at one moment."""
        writer = self.events.writer
        stats = writer.stats
        durable = writer.durable_seq
        empty: dict[str, int] = {}
        counts = self.events.read_index(lambda i: i.incident_counts(), empty)
        steps = self.runtime.clock_steps
        return RunSnapshot(
            pid=os.getpid(),
            started_ns=self.started_ns,
            wall_ns=time.time_ns(),
            writer=WriterView(
                next_seq=writer.next_seq,
                durable_seq=durable,
                backlog_fraction=round(writer.backlog_fraction, 4),
                full=writer.full,
                refusing=writer.refusing,
                io_error=str(writer.io_error) if writer.io_error else None,
                appended=writer.next_seq - stats.start_seq,
                bytes_written=stats.bytes_written,
                syncs=stats.syncs,
                sync_seconds_sum=stats.sync_seconds_sum,
                sync_buckets=list(stats.sync_buckets),
                log_bytes=_log_bytes(self.events),
                max_bytes=int(self.events.config.log.max_bytes),
            ),
            durability=self.durability,
            drivers=[
                DriverView(
                    h.sensor,
                    h.driver,
                    h.state,
                    h.readings,
                    h.failures,
                    h.dropped,
                    h.last_error,
                    h.restart_in_s,
                )
                for h in self.runtime.health.values()
            ],
            consumers=consumer_views(self.consumers.consumers, durable, self._oldest),
            clock=ClockView(
                steps=len(steps),
                last_step_ns=steps[-1].step_ns if steps else None,
                last_step_at_ns=steps[-1].wall_after_ns if steps else None,
            ),
            repairs=counts.get("repair", 0),
            gaps=counts.get("gap", 0),
        )

    def answer(self, request: Request) -> msgspec.Struct:
        """The control socket's answer to one request."""
        if isinstance(request, StatusRequest):
            return self.snapshot()
        assert isinstance(request, RetryRequest)
        sinks = self.consumers.sink_names()
        if request.sink is not None and request.sink not in sinks:
            known = ", ".join(sinks) or "none"
            return ErrorAnswer(
                f"no sink named {request.sink!r} in the running pilog; its sinks: {known}"
            )
        woken = self.consumers.retry_now(request.sink)
        if woken:
            log.warning("retry asked by the operator: %s send again now", ", ".join(woken))
        return RetryAnswer(woken=woken, sinks=sinks)


def _log_bytes(events: EventLog) -> int:
    total = 0
    for _, path in naming.list_segments(events.paths.log_dir):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue  # deleted by retention since the listing
    return total


def _sync_quietly(events: EventLog) -> None:
    try:
        events.writer.sync()
    except LogError as e:
        log.error("could not sync the log before stopping consumers: %s", e)


def check_data_dir_mount(config: Config) -> None:
    """Refuse a read-only data dir; warn once when it will not survive a reboot."""
    if config.mode == "ephemeral":
        check_owner(config)
    mount = mount_of(Path(config.data_dir))
    if mount is None:
        return
    where = f"data dir {config.data_dir} is on {mount.fstype} mounted at {mount.point}"
    if mount.read_only:
        raise DataDirError(
            f"{where}, read-only; on a read-only root run with --ephemeral "
            '(or mode = "ephemeral") to keep state in RAM'
        )
    if config.mode == "ephemeral":
        log.info(
            "ephemeral mode: state in RAM under %s (log capped at %s), not kept across reboots",
            config.data_dir,
            human_bytes(config.log.max_bytes),
        )
    elif mount.volatile:
        log.warning("%s: the log will not survive a reboot", where)


def _catch_early_stop() -> list[int]:
    """Note SIGTERM/SIGINT arriving while the data dir opens; the loop acts on them."""
    caught: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: caught.append(signum))
    return caught


async def _serve(
    config: Config,
    events: EventLog,
    clock: SystemClock,
    consumers: ConsumerGroup,
    early_stop: list[int],
) -> None:
    runtime = Runtime(config, events, clock)
    live = LiveState(events, runtime, consumers)
    control = _serve_control(events, live)
    metrics = _serve_metrics(config, live)
    loop = asyncio.get_running_loop()
    notifier = Notifier()

    def stop() -> None:
        notifier.notify("STOPPING=1")
        runtime.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    if early_stop:
        stop()
    watchdog = None
    if notifier.watchdog_interval_s:
        watchdog = asyncio.create_task(_watchdog(notifier, notifier.watchdog_interval_s))
    notifier.notify(
        f"READY=1\nSTATUS=logging {counted(len(config.sensor), 'sensor')}\nMAINPID={os.getpid()}"
    )
    try:
        await runtime.run()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if control is not None:
            control.close()
        if metrics is not None:
            metrics.close()


def _serve_metrics(config: Config, live: LiveState) -> MetricsServer | None:
    address = config.metrics.address()
    if address is None:
        return None
    try:
        server = MetricsServer(address, lambda: render_snapshot(live.snapshot()))
    except OSError as e:
        raise ConfigError(f"metrics.listen {config.metrics.listen}: {e.strerror or e}") from e
    log.info("metrics on http://%s:%d/metrics", address[0], server.port)
    return server


def _serve_control(events: EventLog, live: LiveState) -> ControlServer | None:
    try:
        return ControlServer(events.paths.root / SOCKET_NAME, live.answer)
    except OSError as e:
        log.warning("no control socket (%s): pilog status shows only what is on disk", e)
        return None


async def _watchdog(notifier: Notifier, interval_s: float) -> None:
    """Ping systemd from the loop: if the loop wedges, the pings stop and systemd restarts us."""
    while True:
        notifier.notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)
