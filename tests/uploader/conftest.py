"""A real VictoriaMetrics on 127.0.0.1 for the uploader's tests (Debian's `victoria-metrics`).

`victoria_metrics` starts one per test on a free port with its own storage directory, waits
until `/health` answers, and kills it at teardown; `start_victoria_metrics` is a factory for a
test that needs extra flags or a second server (each is killed at teardown too). Tests that use
either skip with the reason when the binary is absent.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

VICTORIA_METRICS = shutil.which("victoria-metrics")
WAIT_S = 60.0  # a bound for waiting on the server, never a measured result
POLL_S = 0.02
START_ATTEMPTS = 3  # another process may take the free port between our probe and its bind

SKIP_REASON = "victoria-metrics is not installed (Debian package `victoria-metrics`)"


@dataclass
class VictoriaMetrics:
    """One running server, and the reads the tests need from it."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def flush(self) -> None:
        """Make everything written so far searchable (it waits in memory for a few seconds)."""
        with _client() as client:
            client.get(f"{self.url}/internal/force_flush").raise_for_status()

    def export(self, match: str) -> list[dict[str, Any]]:
        """The series matching a selector, as `/api/v1/export` gives them (flushed first)."""
        self.flush()
        with _client() as client:
            response = client.get(f"{self.url}/api/v1/export", params={"match[]": match})
        response.raise_for_status()
        # JSON lines end in "\n" only; str.splitlines would also split at U+0085 in a name.
        return [json.loads(line) for line in response.text.split("\n") if line.strip()]

    def wait_for_series(self, match: str, count: int) -> list[dict[str, Any]]:
        """Poll the export until `count` series match; fail with what was there at the deadline."""
        deadline = time.monotonic() + WAIT_S
        while True:
            series = self.export(match)
            if len(series) >= count or time.monotonic() > deadline:
                return series
            time.sleep(POLL_S)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT_S)


def _client() -> httpx.Client:
    return httpx.Client(timeout=WAIT_S, trust_env=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(vm: VictoriaMetrics) -> bool:
    """True once `/health` answers OK; False when the process exited first."""
    deadline = time.monotonic() + WAIT_S
    with _client() as client:
        while time.monotonic() < deadline:
            if vm.process.poll() is not None:
                return False
            try:
                if client.get(f"{vm.url}/health").status_code == 200:
                    return True
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(POLL_S)
    raise TimeoutError(f"victoria-metrics did not answer /health; see {vm.log_path}")


def _start(tmp: Path, *extra_args: str) -> VictoriaMetrics:
    """A fresh server storing under `tmp`; the caller stops it."""
    assert VICTORIA_METRICS is not None
    for attempt in range(START_ATTEMPTS):
        port = _free_port()
        log_path = tmp / f"victoria-metrics-{attempt}.log"
        args = [
            VICTORIA_METRICS,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={tmp / 'vm-data'}",
            "-loggerLevel=ERROR",  # its INFO lines are noise; parse errors still show
            "-retentionPeriod=100y",  # the tests' fixed timestamps are years old
            "-search.latencyOffset=0s",  # just-written points are visible to queries
            *extra_args,
        ]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
        vm = VictoriaMetrics(f"http://127.0.0.1:{port}", process, log_path)
        try:
            healthy = _wait_healthy(vm)
        except BaseException:
            vm.stop()
            raise
        if healthy:
            return vm
        vm.stop()
    raise RuntimeError(f"victoria-metrics did not start; see {tmp}/victoria-metrics-*.log")


StartVictoriaMetrics = Callable[..., VictoriaMetrics]


@pytest.fixture
def start_victoria_metrics(tmp_path: Path) -> Iterator[StartVictoriaMetrics]:
    """`start(*extra_args)`: another running server, with its own storage."""
    if VICTORIA_METRICS is None:
        pytest.skip(SKIP_REASON)
    started: list[VictoriaMetrics] = []

    def start(*extra_args: str) -> VictoriaMetrics:
        home = tmp_path / f"vm{len(started)}"
        home.mkdir()
        started.append(_start(home, *extra_args))
        return started[-1]

    try:
        yield start
    finally:
        for vm in started:
            vm.stop()


@pytest.fixture
def victoria_metrics(start_victoria_metrics: StartVictoriaMetrics) -> VictoriaMetrics:
    return start_victoria_metrics()
