"""`pilog run`: read the sensors into the log until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from pilog.clock import SystemClock
from pilog.config import Config
from pilog.datadir import EventLog
from pilog.runtime import Runtime, load_drivers

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
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop)
    await runtime.run()
