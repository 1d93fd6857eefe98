"""Operator commands and service behaviour: check, drivers, sd_notify, stopping a stuck driver."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import WAIT_S, clean_env, pilog, tail_json, wait_until, write_config

STUCK_DRIVER = textwrap.dedent(
    """
    import time
    from pilog.drivers import PollingDriver

    class Stuck(PollingDriver):
        name = "stuck"
        description = "never answers"

        def poll(self):
            time.sleep(3600)  # a bus read that never returns
            return []

    class Broken(PollingDriver):
        name = "broken"
        description = "no device"

        def open(self):
            raise OSError(121, "Remote I/O error")

        def poll(self):
            return []
    """
)


def plugin_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "plugins").mkdir(exist_ok=True)
    (tmp_path / "plugins" / "extra_drivers.py").write_text(STUCK_DRIVER)
    env = clean_env()
    env["PYTHONPATH"] = f"{tmp_path / 'plugins'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pilog", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=WAIT_S,
        check=False,
    )


def test_check_reports_each_sensor_and_fails_when_one_fails(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        sensors=[
            {"name": "air", "interval_ms": 1000},
            {"name": "bus", "driver": "extra_drivers:Broken"},
            {"name": "nope", "driver": "extra_drivers:Missing"},
        ],
    )
    result = run(["check", "--json", "-c", str(config)], plugin_env(tmp_path))
    assert result.returncode == 1, result.stderr
    outcomes = {o["what"]: o for o in json.loads(result.stdout)}
    assert outcomes[str(tmp_path / "data")]["ok"]
    assert outcomes["air"]["ok"]
    assert "temperature_c" in outcomes["air"]["detail"]
    assert not outcomes["bus"]["ok"]
    assert "Remote I/O error" in outcomes["bus"]["detail"]
    assert not outcomes["nope"]["ok"]
    assert "has no Missing" in outcomes["nope"]["detail"]
    assert not (tmp_path / "data").exists()  # checking writes nothing


def test_check_passes_on_the_embedded_default(tmp_path: Path) -> None:
    result = pilog("check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "synthetic" in result.stdout


def test_drivers_lists_builtin_drivers_with_kind_and_description() -> None:
    result = pilog("drivers")
    assert result.returncode == 0
    assert "synthetic" in result.stdout
    assert "polling" in result.stdout
    assert "sine" in result.stdout


def test_sd_notify_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(WAIT_S)
        config = write_config(tmp_path / "pilog.toml", tmp_path / "data")
        env = clean_env() | {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "pilog", "run", "-c", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            messages = [sock.recv(4096).decode()]
            assert messages[0].startswith("READY=1")
            assert f"MAINPID={proc.pid}" in messages[0]
            watchdogs = 0
            while watchdogs < 3:  # pings keep coming while it runs
                msg = sock.recv(4096).decode()
                watchdogs += msg == "WATCHDOG=1"
            proc.send_signal(signal.SIGTERM)
            while "STOPPING=1" not in messages:
                messages.append(sock.recv(4096).decode())
            assert proc.wait(WAIT_S) == 0
        finally:
            proc.kill()
            proc.wait()


def test_sigterm_exits_promptly_with_a_driver_stuck_in_a_blocking_call(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "pilog.toml",
        data,
        sensors=[
            {"name": "air", "interval_ms": 50},
            {"name": "stuck", "driver": "extra_drivers:Stuck", "interval_ms": 100},
        ],
    )
    stderr = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pilog", "run", "-c", str(config)],
        env=plugin_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        wait_until((data / "log").is_dir, "the log")  # tail refuses a data dir yet to be made
        wait_until(
            lambda: any(
                e["type"] == "driver_started" and e["sensor"] == "stuck"
                for e in tail_json("-c", config, "--from", "0")
            ),
            "the stuck driver to start",
        )
        proc.send_signal(signal.SIGTERM)
        # The design's bound: exit within 10 s, abandoning the stuck driver's thread.
        assert proc.wait(10) == 0, (tmp_path / "stderr.txt").read_text()
    finally:
        proc.kill()
        proc.wait()
        stderr.close()
    events = tail_json("-c", config, "--from", "0")
    stopped = {e["sensor"] for e in events if e["type"] == "driver_stopped"}
    assert stopped == {"air", "stuck"}
    assert pilog("verify", "-c", config).returncode == 0
