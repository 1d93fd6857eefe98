"""Long work shows progress on a terminal's stderr, and nothing at all when piped.

Each command runs as a subprocess twice over the same data dir: stderr on a real
pseudo-terminal (the bar appears, with the bytes to read and the rate), then stderr to a pipe
(no progress, and stdout byte for byte the same).
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import (
    PILOG,
    WAIT_S,
    clean_env,
    projections_toml,
    run_pilog,
    wait_until,
    write_config,
)

LOG = {"segment_bytes": "4KiB", "max_bytes": "1MiB", "fsync_interval_ms": 10}
TERMINAL = {"TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
PROGRESS_MARKS = ("events/s", "B/s", "\x1b[")


class TerminalRun:
    """A pilog command with stderr on a pseudo-terminal, stdout on a pipe."""

    def __init__(self, *args: object) -> None:
        master, slave = pty.openpty()
        self._master = master
        self.proc = subprocess.Popen(
            [*PILOG, *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=clean_env() | TERMINAL,
        )
        os.close(slave)
        self._raw = bytearray()
        self._cv = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                chunk = b""
            with self._cv:
                if not chunk:
                    self._eof = True
                    self._cv.notify_all()
                    return
                self._raw += chunk
                self._cv.notify_all()

    def text(self) -> str:
        """What the terminal received, without escape sequences."""
        with self._cv:
            return ANSI.sub("", self._raw.decode(errors="replace"))

    def wait_for(self, needle: str) -> None:
        with self._cv:
            ok = self._cv.wait_for(lambda: self._eof or needle in self.text(), WAIT_S)
        assert ok, f"no {needle!r} on the terminal:\n{self.text()}"
        assert needle in self.text(), f"no {needle!r} on the terminal:\n{self.text()}"

    def finish(self) -> tuple[bytes, str]:
        """Stdout and the terminal's text once the command has ended."""
        out, _ = self.proc.communicate(timeout=WAIT_S)
        self._thread.join(WAIT_S)
        os.close(self._master)
        return out, self.text()


def piped(*args: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*PILOG, *map(str, args)],
        capture_output=True,
        timeout=WAIT_S,
        env=clean_env() | TERMINAL,
        check=False,
    )


def segments_total(data: Path) -> str:
    """The bar's total, as rich's DownloadColumn shows bytes under a megabyte."""
    total = sum(p.stat().st_size for p in (data / "log").glob("*.seg"))
    assert 1000 <= total < 1_000_000, total
    return f"/{total / 1000:,.1f} kB"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped pilog's data dir of several segments, with two projections configured."""
    root = tmp_path_factory.mktemp("filled")
    data = root / "data"
    config = write_config(root / "pilog.toml", data, log=LOG, extra=projections_toml())
    with run_pilog(config) as p:
        p.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")
        wait_until(lambda: len(list((data / "log").glob("*.seg"))) >= 5, "five segments")
        assert p.stop() == 0, p.stderr.text()
    return root


@pytest.fixture
def setup(filled: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the filled data dir for one test (commands here rewrite indexes and lmdb)."""
    data = tmp_path / "data"
    shutil.copytree(filled / "data", data)
    config = write_config(tmp_path / "pilog.toml", data, log=LOG, extra=projections_toml())
    return data, config


def assert_progress_only_on_terminal(*args: object, shows: tuple[str, ...]) -> str:
    """Run on a terminal, then piped: the terminal shows `shows`, the pipe no progress, and
    stdout is the same; return the terminal's text."""
    out, terminal = TerminalRun(*args).finish()
    for text in shows:
        assert text in terminal, f"{text!r} not on the terminal:\n{terminal}"
    plain = piped(*args)
    assert plain.stdout == out
    stderr = plain.stderr.decode()
    for mark in PROGRESS_MARKS:
        assert mark not in stderr, stderr
    # Not even the blank line a bar leaves behind on a stream that is not a terminal.
    assert "" not in stderr.splitlines(), repr(stderr)
    for text in shows:
        assert text not in stderr, stderr
    return terminal


@pytest.mark.parametrize(
    ("args", "shows"),
    [
        (("verify",), ("checking frames", "B/s", "decoding events", "events/s")),
        (("export", "--format", "csv"), ("finding columns", "exporting", "events/s")),
        (("export", "--format", "ndjson"), ("exporting", "events/s")),
        (("repair", "--dry-run"), ("reading segments", "B/s")),
        (("repair",), ("reading segments", "B/s")),
    ],
    ids=["verify", "export-csv", "export-ndjson", "repair-dry-run", "repair"],
)
def test_long_commands_show_progress_on_a_terminal_and_nothing_when_piped(
    setup: tuple[Path, Path], args: tuple[str, ...], shows: tuple[str, ...]
) -> None:
    data, config = setup
    total = segments_total(data)
    terminal = assert_progress_only_on_terminal(*args, "-c", config, shows=shows)
    assert total in terminal, terminal


def test_projection_rebuild_by_replay_shows_progress_on_a_terminal_only(
    setup: tuple[Path, Path],
) -> None:
    data, config = setup
    total = segments_total(data)
    args = ("replay", "-c", config, "--from", "0", "--projection", "latest")
    terminal = assert_progress_only_on_terminal(*args, shows=("rebuilding latest", "events/s"))
    assert total in terminal, terminal
    assert "projection:latest: rebuilt up to seq" in piped(*args).stdout.decode()


def test_index_rebuild_at_start_shows_progress_on_a_terminal_only(
    setup: tuple[Path, Path],
) -> None:
    data, config = setup
    total = segments_total(data)
    (data / "index.sqlite").unlink()
    run = TerminalRun("run", "-c", config)
    try:
        run.wait_for("pilog running")
    finally:
        run.proc.send_signal(signal.SIGTERM)
    _, terminal = run.finish()
    assert run.proc.returncode == 0, terminal
    assert "rebuilding index" in terminal, terminal
    assert "events/s" in terminal, terminal
    assert total in terminal, terminal
    # The bar is gone before pilog says it runs: the rebuild comes first.
    assert terminal.rindex("rebuilding index") < terminal.index("pilog running"), terminal

    (data / "index.sqlite").unlink()
    with run_pilog(config) as p:
        p.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")
        assert p.stop() == 0
        stderr = p.stderr.text()
    assert "rebuilding index" not in stderr, stderr
    assert "events/s" not in stderr, stderr
    assert "" not in stderr.splitlines(), repr(stderr)
    assert "index rebuilt" in stderr, stderr
