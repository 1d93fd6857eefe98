"""`pilog check`: validate the config, open every sensor's device, probe every sink."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pilog.clock import SystemClock
from pilog.config import Config, SensorConfig, SinkConfig, driver_dirs
from pilog.counts import counted
from pilog.drivers import DriverContext, StreamingDriver, find_driver
from pilog.drivers.base import parse_options
from pilog.durability import durability
from pilog.errors import PilogError
from pilog.uploader.probe import ProbeResult, probe_sink

CHECK_TIMEOUT_S = 10.0  # per sensor; and the cap of a sink's own timeout for its probe
# A probe's steps share its deadline; this much more is for a step that overran it (a resolver
# that ignores it), after which the row says the probe never finished.
PROBE_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One line of the report: what was checked, whether it works, and why not."""

    what: str
    driver: str
    ok: bool
    detail: str


def check(config: Config, timeout_s: float = CHECK_TIMEOUT_S) -> list[Outcome]:
    """The data dir, each sensor (driver found, device opens and reads), each sink (probed)."""
    outcomes = [_check_data_dir(Path(config.data_dir).absolute()), _check_durability(config)]
    outcomes += [_check_sensor(config, sensor, timeout_s) for sensor in config.sensor]
    outcomes += _check_sinks(config, timeout_s)
    return outcomes


def _check_data_dir(path: Path) -> Outcome:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return Outcome(str(path), "data dir", False, f"{probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        return Outcome(str(path), "data dir", False, f"{probe} is not writable")
    detail = "exists, writable" if probe == path else f"will be created under {probe}"
    return Outcome(str(path), "data dir", True, detail)


def _check_durability(config: Config) -> Outcome:
    """The loss window in force and why; a setting that wears the card out says so."""
    window = durability(config)
    detail = window.summary() + (f". Warning: {window.advice}" if window.advice else "")
    return Outcome("durability", "log", True, detail)


def _check_sensor(config: Config, sensor: SensorConfig, timeout_s: float) -> Outcome:
    try:
        cls = find_driver(sensor.driver, driver_dirs(config))
        opts = parse_options(cls, sensor, config.source)
    except PilogError as e:
        return Outcome(sensor.name, sensor.driver, False, str(e))
    ctx = DriverContext(sensor, opts, SystemClock(), data_dir=config.data_dir)
    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            driver = cls(ctx)
            driver.open()
            try:
                if isinstance(driver, StreamingDriver):
                    result["detail"] = "opened (streaming: readings come as the device sends)"
                else:
                    payloads = driver.poll()
                    fields = sorted({k for p in payloads for k in p})
                    result["detail"] = (
                        f"read {counted(len(payloads), 'reading')}: {', '.join(fields)}"
                    )
            finally:
                driver.close()
        except Exception as e:
            result["error"] = str(e) or type(e).__name__

    # A daemon thread: a device hung in a syscall must not hang the check.
    thread = threading.Thread(target=probe, name=f"check:{sensor.name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return Outcome(sensor.name, sensor.driver, False, f"no answer within {timeout_s:.0f}s")
    if "error" in result:
        return Outcome(sensor.name, sensor.driver, False, result["error"])
    return Outcome(sensor.name, sensor.driver, True, result["detail"])


def _check_sinks(config: Config, cap_s: float) -> list[Outcome]:
    """Probe every sink at once, each within its own timeout capped by `cap_s`."""
    probes = [_SinkProbe(config, sink, min(float(sink.timeout), cap_s)) for sink in config.sink]
    return [probe.outcome() for probe in probes]


class _SinkProbe:
    """One sink's probe, running in a daemon thread: a hung resolver must not hang the check."""

    def __init__(self, config: Config, sink: SinkConfig, budget_s: float) -> None:
        self.sink = sink
        self.budget_s = budget_s
        self.until = time.monotonic() + budget_s + PROBE_GRACE_S
        self.result: ProbeResult | None = None
        args = (sink, config.device_id, Path(config.data_dir), budget_s, driver_dirs(config))
        self.thread = threading.Thread(
            target=self._run, args=args, name=f"check:sink:{sink.name}", daemon=True
        )
        self.thread.start()

    def _run(
        self, sink: SinkConfig, device_id: str, data_dir: Path, budget_s: float, search: list[Path]
    ) -> None:
        try:
            self.result = probe_sink(sink, device_id, data_dir, budget_s, search)
        except Exception as e:  # a bug or a library's surprise: a row, not a dead thread
            self.result = ProbeResult(False, f"the probe failed: {type(e).__name__}: {e}")

    def outcome(self) -> Outcome:
        self.thread.join(max(self.until - time.monotonic(), 0.0))
        what, kind = f"sink:{self.sink.name}", self.sink.type
        if self.result is None:
            detail = f"the probe did not finish within {self.budget_s:g}s"
            return Outcome(what, kind, False, detail)
        return Outcome(what, kind, self.result.ok, self.result.detail)


def render(outcomes: list[Outcome], console: Console) -> None:
    table = Table("what", "driver", "result", "detail")
    table.columns[-1].overflow = "fold"  # a URL in a fix must be shown whole, not cut with …
    for o in outcomes:
        table.add_row(o.what, o.driver, "[green]ok[/]" if o.ok else "[red]failed[/]", o.detail)
    console.print(table)
