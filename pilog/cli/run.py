"""`pilog run`: read the sensors into the log until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from pilog.clock import SystemClock
from pilog.config import Config
from pilog.datadir import EventLog
from pilog.runtime import Runtime, load_drivers
from pilog.systemd import Notifier

log = logging.getLogger("pilog")


def run(config: Config) -> None:
    """Open the data dir, run every sensor, and on a stop signal flush, fsync and return."""
    load_drivers(config)  # a bad sensor is a config error: refuse before touching the data dir
    clock = SystemClock()
    events = EventLog(config, clock=clock)
    try:
        writer = events.writer
        log.info(
            "pilog running: %d sensor(s), data in %s, next seq %d, fsync=%s (config: %s)",
            len(config.sensor),
            Path(config.data_dir).resolve(),
            writer.next_seq,
            config.log.fsync,
            config.source,
        )
        asyncio.run(_serve(config, events, clock))
    finally:
        events.close()
    log.info("pilog stopped: log synced up to seq %d", events.writer.durable_seq)


async def _serve(config: Config, events: EventLog, clock: SystemClock) -> None:
    runtime = Runtime(config, events, clock)
    loop = asyncio.get_running_loop()
    notifier = Notifier()

    def stop() -> None:
        notifier.notify("STOPPING=1")
        runtime.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
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


async def _watchdog(notifier: Notifier, interval_s: float) -> None:
    """Ping systemd from the loop: if the loop wedges, the pings stop and systemd restarts us."""
    while True:
        notifier.notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)
