"""Ephemeral mode on a read-only root, proved in a private mount namespace: every mount but a
fresh tmpfs is remounted read-only, and `pilog run --ephemeral` still ingests and uploads. In
normal mode, a data dir on tmpfs is warned about and one on a read-only mount refused."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import PILOG, clean_env, run_pilog, write_config

from pilog.testing.receiver import Receiver

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None,
    reason="needs root with unshare(1) and nsenter(1) for a private mount namespace",
)

# Remount everything read-only except the tmpfs for pilog and the kernel's own filesystems,
# then check that the places a stray write would go are really read-only.
READ_ONLY_ROOT = """
set -e
mount -t tmpfs -o size=64m,mode=0750 tmpfs "$EPH"
awk '{print $2}' /proc/self/mounts | sort -u | while read -r m; do
    case "$m" in "$EPH"|/proc|/proc/*|/sys|/sys/*|/dev|/dev/pts) continue;; esac
    mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for probe in / /tmp "$OUTSIDE" /dev/shm "$HOME"; do
    if touch "$probe/.pilog-probe" 2>/dev/null; then echo "still writable: $probe" >&2; exit 97; fi
done
exec "$@"
"""


def namespace_available() -> bool:
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


def test_ephemeral_mode_ingests_and_uploads_with_everything_else_read_only(
    tmp_path: Path,
) -> None:
    if not namespace_available():
        pytest.skip("unshare --mount is not permitted here")
    eph = tmp_path / "ram"
    eph.mkdir()
    with Receiver() as rx:
        config = write_config(
            tmp_path / "pilog.toml",
            tmp_path / "would-be-data",  # ignored in ephemeral mode
            sensors=[{"name": "air", "interval_ms": 10}],
            extra=f'[[sink]]\nname = "up"\ntype = "http-json"\nurl = "{rx.url}"\nlinger_ms = 20\n',
        )
        env = {
            **clean_env(),
            "EPH": str(eph),
            "OUTSIDE": str(tmp_path),
            "RUNTIME_DIRECTORY": str(eph),
        }
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_ROOT, "sh"]
        proc = subprocess.Popen(
            [*argv, *PILOG, "run", "--ephemeral", "-c", str(config)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            rx.wait_for(30, timeout=60)
            inside = ["nsenter", "--target", str(proc.pid), "--mount", *PILOG]
            status = subprocess.run(
                [*inside, "status", "--json", "-c", str(config)],
                env={**env, "PILOG_EPHEMERAL": "1"},  # what the other commands go by
                capture_output=True,
                text=True,
                check=False,
            )
            assert status.returncode == 0, status.stderr
            state = json.loads(status.stdout)
            assert state["data_dir"] == str(eph)
            assert state["fsync"] == "never"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert rx.validation_errors == []
    assert "ephemeral mode: state in RAM" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pilog.toml", "ram"]
    assert list(eph.iterdir()) == []  # the tmpfs lived in the namespace only


def test_a_data_dir_on_tmpfs_is_warned_about(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    data = shm / f"pilog-test-{os.getpid()}-{tmp_path.name}"
    config = write_config(tmp_path / "pilog.toml", data)
    try:
        with run_pilog(config) as p:
            p.stderr.wait_for(lambda line: "will not survive a reboot" in line, "the warning")
            assert p.stop() == 0
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert "on tmpfs" in p.stderr.text()


def test_a_data_dir_on_a_read_only_mount_is_refused_in_one_sentence(tmp_path: Path) -> None:
    if not namespace_available():
        pytest.skip("unshare --mount is not permitted here")
    config = write_config(tmp_path / "pilog.toml", tmp_path / "data")
    script = f"mount --bind -o ro {shlex.quote(str(tmp_path))} {shlex.quote(str(tmp_path))}"
    script += ' && exec "$@"'
    result = subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"),
            *(*PILOG, "run", "-c", str(config)),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("pilog: error: data dir"), result.stderr
    assert "read-only" in lines[-1]
    assert "--ephemeral" in lines[-1]
