"""Running the `pilog` CLI as a subprocess: configs, processes, output lines, waiting.

Nothing here sleeps for a fixed time: everything that can be awaited is polled against a
deadline (`WAIT_S`), which is only ever a bound for waiting, never a measured result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, TypeVar

from pilog.history import History

PILOG = (sys.executable, "-m", "pilog")
# Public captures and datasheet vectors shared beside the checkout (never copied into it);
# tests that need them skip with a clear reason when they are absent.
CORPUS = Path(
    os.environ.get("PILOG_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)
WAIT_S = 60.0  # generous: a loaded CI box must not turn a slow start into a failure
POLL_S = 0.01
DEVICE_ID = "test-device"

T = TypeVar("T")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    raise TypeError(f"no TOML for {value!r}")


def write_config(
    path: Path,
    data_dir: Path,
    *,
    log: dict[str, object] | None = None,
    sensors: Iterable[dict[str, object]] = ({"name": "air", "interval_ms": 20},),
    device_id: str = DEVICE_ID,
    extra: str = "",
) -> Path:
    """Write a pilog.toml; each sensor defaults to the synthetic driver; `extra` is appended
    as it is (`[[sink]]` and `[[projection]]` tables)."""
    lines = [f"device_id = {toml_value(device_id)}", f"data_dir = {toml_value(data_dir)}", ""]
    lines.append("[log]")
    for key, value in (log or {}).items():
        lines.append(f"{key} = {toml_value(value)}")
    for sensor in sensors:
        lines += ["", "[[sensor]]"]
        for key, value in {"driver": "synthetic", **sensor}.items():
            lines.append(f"{key} = {toml_value(value)}")
    lines.append(extra)
    path.write_text("\n".join(lines) + "\n")
    return path


def clean_env() -> dict[str, str]:
    """The test's environment without PILOG_* overrides that would change what is tested."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PILOG_")}


def pilog(
    *args: object,
    cwd: Path | None = None,
    timeout: float = WAIT_S,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one pilog command to completion; output captured as text. `env` is added to the
    test's environment (PILOG_* overrides the test means)."""
    return subprocess.run(
        [*PILOG, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=clean_env() | (env or {}),
        check=False,
    )


def assert_one_sentence_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one `pilog: error:` line on stderr and no traceback."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pilog: error: "), result.stderr
    return lines[0]


def tail_json(*args: object) -> list[dict[str, Any]]:
    """`pilog tail --json ARGS` of a stopped log, parsed; the command must succeed."""
    result = pilog("tail", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def status_json(*args: object) -> dict[str, Any]:
    result = pilog("status", "--json", *args)
    assert result.returncode == 0, result.stderr
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def wait_until(
    probe: Callable[[], T | None], what: str, timeout: float = WAIT_S, poll_s: float = POLL_S
) -> T:
    """Poll `probe` until it returns neither None nor False; return it; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll_s)


def last_seq(data_dir: Path) -> int | None:
    """The last seq a reader sees on disk now (what any other process would see)."""
    return History(data_dir).last_seq()


def wait_for_seq(data_dir: Path, seq: int, timeout: float = WAIT_S) -> int:
    """Wait until the log on disk holds `seq`; return the last seq seen then."""

    def probe() -> int | None:
        last = last_seq(data_dir)
        return last if last is not None and last >= seq else None

    return wait_until(probe, f"seq {seq} in {data_dir}", timeout)


class LineReader:
    """Collects the lines of a child's stream on a thread, so tests can await them."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                with self._cv:
                    self.lines.append(line.rstrip("\n"))
                    self._cv.notify_all()
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def wait_for(
        self, match: Callable[[str], bool], what: str, timeout: float = WAIT_S, start: int = 0
    ) -> str:
        """The first line from index `start` on that matches; fail at the deadline or EOF."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines[start:]:
                    if match(line):
                        return line
                start = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    why = "the stream ended" if self._eof else "timed out"
                    tail = "\n".join(self.lines[-20:])
                    raise AssertionError(f"{why} waiting for {what}; last lines:\n{tail}")
                self._cv.wait(remaining)

    def wait_eof(self, timeout: float = WAIT_S) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "stream still open"

    def text(self) -> str:
        with self._cv:
            return "\n".join(self.lines)


class Running:
    """A `pilog` subprocess that keeps running (`run`, `tail -f`), stdout and stderr collected."""

    def __init__(self, *args: object, cwd: Path | None = None) -> None:
        self.args = [*PILOG, *map(str, args)]
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=clean_env(),
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.stdout = LineReader(self.proc.stdout)
        self.stderr = LineReader(self.proc.stderr)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = WAIT_S) -> int:
        """Exit status once the process has ended and its output is read."""
        code = self.proc.wait(timeout)
        self.stdout.wait_eof()
        self.stderr.wait_eof()
        return code

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = WAIT_S) -> int:
        self.send(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL if still running, and reap: for cleanup and for crash tests."""
        if self.alive():
            self.proc.kill()
        self.wait()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def run_pilog(config: Path, *extra: object) -> Running:
    """Start `pilog run -c CONFIG`."""
    return Running("run", "-c", config, *extra)


def dump_lmdb(path: Path) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every key and value of every named sub-database of the lmdb environment at `path`."""
    import lmdb

    env = lmdb.open(str(path), readonly=True, max_dbs=64, lock=False)
    try:
        with env.begin() as txn:
            names = [k for k, _ in txn.cursor()]
            return {n: list(txn.cursor(db=env.open_db(n, txn=txn, create=False))) for n in names}
    finally:
        env.close()


def projections_toml(commit_interval: str = "100ms", windows: str = '["1s", "1m"]') -> str:
    """A `latest` and a `rollup` projection, for the configs of tests."""
    return f"""
[[projection]]
type = "latest"
commit_interval = "{commit_interval}"

[[projection]]
type = "rollup"
windows = {windows}
commit_interval = "{commit_interval}"
"""


class ReceiverProcess:
    """`python -m pilog.testing.receiver` in its own process, so it outlives `kill -9` of
    pilog, failing a seeded fraction of requests. With `dump`, every object it stores is
    appended there; restarted on the same port, the file counts every copy it ever stored."""

    def __init__(self, fail_rate: float, seed: int, dump: Path | None = None) -> None:
        self.dump = dump
        self.fail_rate = fail_rate
        self.seed = seed
        self.port = 0
        self.url = ""
        self.base = ""
        self.acks_lost = 0  # summed over every process stopped so far
        self.restarts = 0
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        dump = ("--dump", str(self.dump)) if self.dump is not None else ()
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "pilog.testing.receiver", "--port", str(self.port)),
                *("--fail-rate", str(self.fail_rate), "--seed", str(self.seed + self.restarts)),
                *dump,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        assert self.proc.stdout is not None
        url = self.proc.stdout.readline().strip()
        assert url.startswith("http://"), url
        self.url = url
        self.base = url.rsplit("/api/", 1)[0]
        self.port = int(self.base.rsplit(":", 1)[1])

    def get(self, path: str) -> Any:
        import httpx

        return httpx.get(self.base + path, timeout=10).json()

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        self.acks_lost += json.loads(out.strip().splitlines()[-1])["acks_lost"]
        self.proc = None

    def restart(self) -> None:
        self.restarts += 1
        self.start()

    def stored(self) -> list[dict[str, Any]]:
        """Every object stored by any of its processes, duplicates across restarts included."""
        if self.dump is None or not self.dump.exists():
            return []
        return [json.loads(line) for line in self.dump.read_text().splitlines() if line]


def http_sink_toml(url: str, name: str = "keep", batch_max: int = 20, linger_ms: int = 10) -> str:
    """An http-json `[[sink]]` retrying fast, for tests that wait on deliveries."""
    return f"""
[[sink]]
name = "{name}"
type = "http-json"
url = "{url}"
batch_max = {batch_max}
linger_ms = {linger_ms}
retry_initial_ms = 10
retry_max = 0.2
timeout = 5
"""
