"""`pilog run`: read the sensors into the log until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from pilog.cli.common import human_bytes
from pilog.clock import SystemClock
from pilog.config import Config
from pilog.consumers import ConsumerGroup
from pilog.control import SOCKET_NAME, ControlServer
from pilog.datadir import EventLog
from pilog.durability import durability, durability_dict
from pilog.ephemeral import check_owner
from pilog.errors import ConfigError, DataDirError, LogError
from pilog.metrics import MetricsServer, collect, render
from pilog.mounts import mount_of
from pilog.runtime import Runtime, load_drivers
from pilog.systemd import Notifier

log = logging.getLogger("pilog")

CONSUMER_STOP_S = 3.0  # of the 10 s a stop may take; a sink mid-request is abandoned after it


def run(config: Config) -> None:
    """Open the data dir, run every sensor, and on a stop signal flush, fsync and return."""
    os.umask(os.umask(0o027) | 0o027)  # files 0640, dirs 0750: group pilog reads, others nothing
    # Before anything is logged: a stop sent on seeing the first line must not kill us.
    early_stop = _catch_early_stop()
    load_drivers(config)  # a bad sensor is a config error: refuse before touching the data dir
    check_data_dir_mount(config)
    clock = SystemClock()
    events = EventLog(config, clock=clock)
    consumers = None
    try:
        consumers = ConsumerGroup.open(config, events)
        writer = events.writer
        log.info(
            "pilog running: %d sensor(s), data in %s, next seq %d, fsync=%s (config: %s)",
            len(config.sensor),
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
    control = _serve_control(config, events, runtime, consumers)
    metrics = _serve_metrics(config, events, runtime, consumers)
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
        f"READY=1\nSTATUS=logging {len(config.sensor)} sensor(s)\nMAINPID={os.getpid()}"
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


def _serve_metrics(
    config: Config, events: EventLog, runtime: Runtime, consumers: ConsumerGroup
) -> MetricsServer | None:
    address = config.metrics.address()
    if address is None:
        return None
    empty: dict[str, int] = {}

    def page() -> str:
        counts = lambda: events.read_index(lambda i: i.incident_counts(), empty)  # noqa: E731
        return render(collect(events, runtime, consumers, counts))

    try:
        server = MetricsServer(address, page)
    except OSError as e:
        raise ConfigError(f"metrics.listen {config.metrics.listen}: {e.strerror or e}") from e
    log.info("metrics on http://%s:%d/metrics", address[0], server.port)
    return server


def _serve_control(
    config: Config, events: EventLog, runtime: Runtime, consumers: ConsumerGroup
) -> ControlServer | None:
    started_ns = time.time_ns()

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") != "status":
            return {"error": f"unknown command {request.get('cmd')!r}; known: status"}
        return live_status(events, runtime, consumers, started_ns)

    try:
        return ControlServer(events.paths.root / SOCKET_NAME, answer)
    except OSError as e:
        log.warning("no control socket (%s): pilog status shows only what is on disk", e)
        return None


def live_status(
    events: EventLog, runtime: Runtime, consumers: ConsumerGroup, started_ns: int
) -> dict[str, Any]:
    """What only the running process knows, for `pilog status`."""
    writer = events.writer
    steps = runtime.clock_steps
    return {
        "pid": os.getpid(),
        "started_ns": started_ns,
        "wall_ns": time.time_ns(),
        "writer": {
            "next_seq": writer.next_seq,
            "durable_seq": writer.durable_seq,
            "backlog_fraction": round(writer.backlog_fraction, 4),
            "full": writer.full,
            "refusing": writer.refusing,
            "io_error": str(writer.io_error) if writer.io_error else None,
        },
        "durability": durability_dict(events.config),
        "drivers": [dataclasses.asdict(h) for h in runtime.health.values()],
        "consumers": consumers.states(),
        "clock": {
            "steps": len(steps),
            "last_step_ns": steps[-1].step_ns if steps else None,
            "last_step_at_ns": steps[-1].wall_after_ns if steps else None,
        },
    }


async def _watchdog(notifier: Notifier, interval_s: float) -> None:
    """Ping systemd from the loop: if the loop wedges, the pings stop and systemd restarts us."""
    while True:
        notifier.notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)
