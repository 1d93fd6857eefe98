"""The runtime: drivers -> stamped events -> the log, on one asyncio loop.

Concurrency model (docs/decisions/0004-concurrency-model.md): one asyncio loop schedules every
driver and appends every event; blocking device I/O runs on one daemon worker thread per
driver, so a driver stuck in a syscall is abandoned rather than waited for; file I/O of the log
runs on the log's committer thread. Appending never blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pilog.clock import Clock
from pilog.config import Config, SensorConfig, driver_dirs
from pilog.counts import counted
from pilog.datadir import EventLog
from pilog.drivers import DriverContext, PollingDriver, StreamingDriver, load_sensor
from pilog.drivers.base import READ_WAIT_S, Payload
from pilog.errors import (
    ConfigProblemsError,
    LogError,
    LogFullError,
    LogIOError,
    RecordTooLargeError,
)
from pilog.events import ClockStep, DriverFailed, DriverStarted, DriverStopped, Gap, Reading

log = logging.getLogger("pilog.runtime")

RESTART_BACKOFF_MIN_S = 1.0
RESTART_BACKOFF_MAX_S = 300.0
CLOCK_CHECK_INTERVAL_S = 1.0
CLOCK_STEP_THRESHOLD_NS = 1_000_000_000
FLAT_OUT_SLICE_S = 0.005  # interval_ms = 0: longest stretch without yielding to the loop
FLAT_OUT_BACKLOG_SHARE = 0.5  # interval_ms = 0: waits while the writer's backlog is above this


@dataclass
class DriverHealth:
    """What `pilog status` will report of one sensor."""

    sensor: str
    driver: str
    state: str = "starting"
    readings: int = 0
    failures: int = 0
    dropped: int = 0  # readings refused by a full log, recorded in a Gap when it has room
    last_error: str = ""
    restart_in_s: float = 0.0  # the current restart backoff while failing
    readings_at_failure: int = -1  # `readings` when it last failed: tells a streak apart


@dataclass
class _Worker:
    """A daemon thread that runs one driver's blocking calls, one at a time."""

    name: str
    _thread: threading.Thread | None = None
    _calls: list[tuple[Callable[[], Any], Future[Any]]] = field(default_factory=list)
    _cv: threading.Condition = field(default_factory=threading.Condition)

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._cv:
            self._calls.append((fn, fut))
            self._cv.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return fut

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._calls:
                    self._cv.wait()
                fn, fut = self._calls.pop(0)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)


class Runtime:
    """Runs every configured sensor until `stop` is set."""

    def __init__(self, config: Config, events: EventLog, clock: Clock) -> None:
        self.config = config
        self.events = events
        self.clock = clock
        self.health: dict[str, DriverHealth] = {}
        self.fatal: BaseException | None = None
        self._stop = asyncio.Event()
        self._stopped: list[DriverHealth] = []  # stopped by `stop`; their last words are due
        self.clock_steps: list[ClockStep] = []  # this run's, for `pilog status`

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._supervise(s, cls, opts), name=f"sensor:{s.name}")
            for s, cls, opts in load_drivers(self.config)
        ]
        tasks.append(asyncio.create_task(self._watch_clock(), name="clock"))
        try:
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._record_stops()
        if self.fatal is not None:
            raise self.fatal

    def _fail_hard(self, e: BaseException) -> None:
        if self.fatal is None:
            self.fatal = e
            log.error("stopping: %s", e)
        self._stop.set()

    def _append(self, body: Any, incident: bool = False) -> int | None:
        try:
            return self.events.append_incident(body) if incident else self.events.append(body)
        except LogFullError:
            return None
        except LogIOError as e:
            self._fail_hard(e)
            return None

    def _append_many(self, bodies: list[Reading]) -> int | None:
        try:
            return self.events.append_many(bodies)
        except LogFullError:
            return None
        except RecordTooLargeError as e:
            return self._drop_too_large(bodies, e)
        except LogIOError as e:
            self._fail_hard(e)
            return None

    def _drop_too_large(self, bodies: list[Reading], e: RecordTooLargeError) -> int | None:
        """Drop the one reading no frame can hold, as a Gap naming it; append the others."""
        big = bodies[e.index or 0]
        log.error("sensor %s: reading dropped: %s", big.sensor, e)
        gap = Gap(f"reading too large for the log ({e.size} bytes)", count=1, sensor=big.sensor)
        seq = self._append(gap, incident=True)
        rest = [b for b in bodies if b is not big]
        return self._append_many(rest) if rest else seq

    # -- one sensor ----------------------------------------------------------------------

    async def _supervise(self, sensor: SensorConfig, cls: type[PollingDriver], opts: Any) -> None:
        health = self.health[sensor.name] = DriverHealth(sensor.name, cls.name or sensor.driver)
        backoff = RESTART_BACKOFF_MIN_S
        while not self._stop.is_set():
            worker = _Worker(f"driver:{sensor.name}")
            driver: PollingDriver | None = None
            try:
                driver = cls(self._context(sensor, opts))
                await self._call(worker, driver, driver.open, sensor)
                self._append(DriverStarted(sensor.name, health.driver))
                health.state = "running"
                await self._poll_forever(worker, driver, sensor, health)
            except asyncio.CancelledError:
                health.state = "stopped"
                self._stopped.append(health)
                if driver is not None:
                    self._close_quietly(worker, driver)
                raise
            except Exception as e:
                error = _describe(e)
                # Once per failure streak (the same error, no reading in between): a device that
                # stays absent or keeps NACKing is one event and one line, not one per retry.
                repeat = (
                    error == health.last_error and health.readings == health.readings_at_failure
                )
                health.readings_at_failure = health.readings
                health.failures += 1
                health.state = "restarting"
                health.last_error = error
                health.restart_in_s = backoff
                if repeat:
                    log.debug("sensor %s still failing: %s", sensor.name, error)
                else:
                    log.warning(
                        "sensor %s failed: %s; restarting with backoff from %.1fs",
                        sensor.name,
                        error,
                        backoff,
                    )
                    self._append(DriverFailed(sensor.name, error, backoff))
                if driver is not None:
                    self._close_quietly(worker, driver)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)
            else:
                backoff = RESTART_BACKOFF_MIN_S

    def _context(self, sensor: SensorConfig, opts: Any) -> DriverContext:
        return DriverContext(
            sensor, opts, self.clock, log.getChild(sensor.name), data_dir=self.config.data_dir
        )

    async def _call(
        self, worker: _Worker, driver: PollingDriver, fn: Callable[[], Any], sensor: SensorConfig
    ) -> Any:
        if not driver.blocking:
            return fn()
        timeout = _timeout_s(sensor)
        fut = asyncio.wrap_future(worker.submit(fn))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TimeoutError(f"no answer within {timeout:.1f}s") from None

    async def _poll_forever(
        self, worker: _Worker, driver: PollingDriver, sensor: SensorConfig, health: DriverHealth
    ) -> None:
        if isinstance(driver, StreamingDriver):
            await self._stream_forever(worker, driver, sensor, health)
            return
        if sensor.interval_ms == 0:
            await self._poll_flat_out(worker, driver, sensor, health)
            return
        interval_s = sensor.interval_ms / 1000
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        kind = driver.sensor_type or driver.name
        while True:
            payloads: list[Payload] = await self._call(worker, driver, driver.poll, sensor)
            self._store(payloads, sensor, kind, health)
            tick += 1
            # Drift-free: the k-th poll is due at start + k * interval; missed slots are skipped.
            now = loop.time()
            due = start + tick * interval_s
            if due < now:
                tick = math.ceil((now - start) / interval_s)
                due = start + tick * interval_s
            await asyncio.sleep(due - now)

    async def _stream_forever(
        self,
        worker: _Worker,
        driver: StreamingDriver,
        sensor: SensorConfig,
        health: DriverHealth,
    ) -> None:
        """Append what a streaming driver delivers, as it arrives."""
        kind = driver.sensor_type or driver.name
        while True:
            payloads: list[Payload] = await self._call(worker, driver, driver.read, sensor)
            self._store(payloads, sensor, kind, health)

    def _store(
        self, payloads: list[Payload], sensor: SensorConfig, kind: str, health: DriverHealth
    ) -> None:
        """Append a poll's readings; a refusal is counted, and recorded once there is room."""
        if not payloads:
            return
        if self._append_many([Reading(sensor.name, kind, v) for v in payloads]) is None:
            health.dropped += len(payloads)
            return
        health.readings += len(payloads)
        if health.dropped:
            self._report_dropped(sensor, health)

    async def _poll_flat_out(
        self, worker: _Worker, driver: PollingDriver, sensor: SensorConfig, health: DriverHealth
    ) -> None:
        """`interval_ms = 0`: poll as fast as the log takes readings.

        A refused append means "wait for the disk", not "drop": there is no schedule to keep.
        """
        loop = asyncio.get_running_loop()
        kind = driver.sensor_type or driver.name
        retry_s = self.config.log.fsync_interval_ms / 1000
        next_yield = loop.time() + FLAT_OUT_SLICE_S
        writer = self.events.writer
        while True:
            # Leave the top half of the writer's backlog to scheduled sensors: a flat-out
            # sensor that filled it would get their readings refused (dropped) while it waits.
            while writer.backlog_fraction > FLAT_OUT_BACKLOG_SHARE:
                await asyncio.sleep(retry_s / 4)
            payloads: list[Payload] = await self._call(worker, driver, driver.poll, sensor)
            readings = [Reading(sensor.name, kind, values) for values in payloads]
            while readings and self._append_many(readings) is None:
                if self.fatal is not None:
                    return
                await asyncio.sleep(retry_s)
            health.readings += len(readings)
            if loop.time() >= next_yield:  # let other sensors and signals in
                await asyncio.sleep(0)
                next_yield = loop.time() + FLAT_OUT_SLICE_S

    def _report_dropped(self, sensor: SensorConfig, health: DriverHealth) -> None:
        if self._append(_dropped_gap(health), incident=True) is not None:
            log.warning(
                "sensor %s: %s dropped at the source",
                sensor.name,
                counted(health.dropped, "reading"),
            )
            health.dropped = 0

    async def _record_stops(self) -> None:
        """Append each stopped sensor's uncounted drops (a Gap) and its DriverStopped.

        A fast driver can leave the writer's in-memory batch at its bound, which refuses
        appends; these last events wait for one sync rather than being lost (invariant 6).
        """
        for health in self._stopped:
            if health.dropped and await self._append_draining(_dropped_gap(health), True):
                log.warning(
                    "sensor %s: %s dropped at the source",
                    health.sensor,
                    counted(health.dropped, "reading"),
                )
                health.dropped = 0
            await self._append_draining(DriverStopped(health.sensor, "pilog stopping"))

    async def _append_draining(self, body: Gap | DriverStopped, incident: bool = False) -> bool:
        """Append `body`; when the log refuses it, sync the backlog to disk and try once more."""
        if self._append(body, incident) is not None:
            return True
        try:
            await asyncio.to_thread(self.events.writer.sync)
        except LogError as e:
            log.warning("could not record %s of %s: %s", type(body).__name__, body.sensor, e)
            return False
        return self._append(body, incident) is not None

    def _close_quietly(self, worker: _Worker, driver: PollingDriver) -> None:
        def close() -> None:
            try:
                driver.close()
            except Exception as e:
                log.debug("closing %s: %s", driver.ctx.sensor.name, e)

        if driver.blocking:
            worker.submit(close)  # behind a hung poll, it never runs: the thread is abandoned
        else:
            close()

    # -- clock ---------------------------------------------------------------------------

    async def _watch_clock(self) -> None:
        """Append a ClockStep when wall time jumps against monotonic time (NTP on no RTC)."""
        offset = self.clock.wall_ns() - self.clock.mono_ns()
        while True:
            await asyncio.sleep(CLOCK_CHECK_INTERVAL_S)
            wall, mono = self.clock.wall_ns(), self.clock.mono_ns()
            step = (wall - mono) - offset
            if abs(step) > CLOCK_STEP_THRESHOLD_NS:
                log.warning("wall clock stepped by %+.3fs", step / 1e9)
                self.clock_steps.append(ClockStep(step, wall - step, wall))
                self._append(self.clock_steps[-1])
                offset = wall - mono


def load_drivers(config: Config) -> list[tuple[SensorConfig, type[PollingDriver], Any]]:
    """Each sensor with its driver class and parsed options; ConfigError names every bad one."""
    loaded, problems = [], []
    search = driver_dirs(config)
    for i, sensor in enumerate(config.sensor):
        try:
            loaded.append((sensor, *load_sensor(sensor, i, config.source, search)))
        except ConfigProblemsError as e:
            problems += e.problems
    if problems:
        raise ConfigProblemsError(problems)
    return loaded


def _dropped_gap(health: DriverHealth) -> Gap:
    return Gap(
        "log refused appends (full or disk stalled)", count=health.dropped, sensor=health.sensor
    )


def _timeout_s(sensor: SensorConfig) -> float:
    if sensor.timeout_ms is not None:
        return sensor.timeout_ms / 1000
    return max(3 * sensor.interval_ms / 1000, 5 * READ_WAIT_S)


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if isinstance(e, OSError | TimeoutError) else f"{type(e).__name__}: {text}"
