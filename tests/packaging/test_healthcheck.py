"""The image's HEALTHCHECK command, taken from the Dockerfile and run beside a real `pilog run`:
healthy while it answers on its control socket, unhealthy once it stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import clean_env, run_pilog, wait_until, write_config

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def healthcheck_command() -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK ")]
    command: list[str] = json.loads(line.split(" CMD ", 1)[1])
    assert command[0] == "python3"
    return [sys.executable, *command[1:]]


def check(data_dir: Path) -> int:
    env = clean_env() | {"PILOG_DATA_DIR": str(data_dir)}
    return subprocess.run(healthcheck_command(), env=env, timeout=60, check=False).returncode


def test_healthcheck_passes_while_pilog_runs_and_fails_once_it_stopped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "pilog.toml", data)
    with run_pilog(config) as p:
        wait_until((data / "control.sock").exists, "the control socket")
        assert check(data) == 0
        assert p.stop() == 0
    assert check(data) == 1
