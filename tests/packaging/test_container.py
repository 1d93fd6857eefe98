"""The container image: it builds from the Dockerfile, runs as pilog, logs to /data, stops cleanly.

Built with buildah (`--isolation chroot`, root) on the local `debian:bookworm-slim` base, which
`make-base-image` (beside the checkout, in shared/tools) makes when it is missing; a cold
build of both takes about two minutes, `--layers` makes the next ones take seconds. The tests
skip, saying why, when buildah, root or the base image is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import write_config

from pilog import __version__

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
MAKE_BASE_IMAGE = Path(
    os.environ.get("PILOG_MAKE_BASE_IMAGE", ROOT.parent / "shared" / "tools" / "make-base-image")
)
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
TAG = "localhost/pilog:test"
BUILD_S = 900.0  # a bound for a cold build on a slow network, never a measured result
RUN_S = 300.0
BUILDAH = ("buildah", "run", "--isolation", "chroot")

# Inside the container: start `pilog run`, wait (bounded) until `pilog status` sees it logging,
# stop it with SIGTERM as `docker stop` does, report its exit status and what status saw.
RUN_AND_STOP = """
pilog run 2>/tmp/run.err & pid=$!
n=0
until pilog status --json >/tmp/status.json 2>/dev/null \\
    && grep -q '"writer_pid": [0-9]' /tmp/status.json \\
    && grep -q '"last_seq": [1-9]' /tmp/status.json; do
  n=$((n + 1))
  if [ "$n" -gt 600 ]; then kill -KILL "$pid"; cat /tmp/run.err >&2; exit 99; fi
  sleep 0.1
done
kill -TERM "$pid"; wait "$pid"; echo "run exited $?"
cat /tmp/run.err >&2
cat /tmp/status.json
"""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _base_image_present() -> bool:
    listed = subprocess.run(
        ["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return BASE_IMAGE in listed.stdout.split()


@pytest.fixture(scope="module")
def image() -> str:
    """The image built from the checkout's Dockerfile (its base made first if need be)."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (Debian package `buildah`)")
    if os.geteuid() != 0:
        pytest.skip("buildah --isolation chroot builds need root")
    if not _base_image_present():
        if not MAKE_BASE_IMAGE.exists():
            pytest.skip(f"no {BASE_IMAGE} image, and no {MAKE_BASE_IMAGE} to make one")
        made = subprocess.run(
            [MAKE_BASE_IMAGE], capture_output=True, text=True, timeout=BUILD_S, check=False
        )
        if made.returncode != 0:
            pytest.skip(f"no {BASE_IMAGE} image; {MAKE_BASE_IMAGE} failed: {_tail(made.stdout)}")
    built = subprocess.run(
        ["buildah", "bud", "--isolation", "chroot", "--pull=never", "--layers", "-t", TAG, ROOT],
        capture_output=True,
        text=True,
        timeout=BUILD_S,
        check=False,
    )
    assert built.returncode == 0, _tail(built.stdout + built.stderr)
    return TAG


@pytest.fixture
def container(image: str) -> Iterator[str]:
    made = subprocess.run(
        ["buildah", "from", "--pull=never", image], capture_output=True, text=True, check=True
    )
    name = made.stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


def run_in(
    container: str, *argv: str, volumes: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`argv` run in the container as its image's user, from its image's environment."""
    mounts = [arg for volume in volumes for arg in ("-v", volume)]
    return subprocess.run(
        [*BUILDAH, *mounts, container, "--", *argv],
        capture_output=True,
        text=True,
        timeout=RUN_S,
        check=False,
    )


def test_the_image_prints_the_checkouts_version(container: str) -> None:
    result = run_in(container, "pilog", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pilog {__version__}"


def test_the_image_runs_as_pilog_without_a_compiler_or_pip(container: str) -> None:
    result = run_in(container, "sh", "-c", "id -un; id -Gn; command -v gcc cc pip pip3 || true")
    assert result.returncode == 0, result.stderr
    user, groups, *tools = result.stdout.splitlines()
    assert user == "pilog"
    assert "dialout" in groups.split()
    assert tools == []


def test_run_in_the_image_logs_to_data_with_the_mounted_config_and_stops_cleanly(
    container: str, tmp_path: Path
) -> None:
    # data_dir in the file is overridden by the image's PILOG_DATA_DIR=/data.
    config = write_config(tmp_path / "pilog.toml", Path("/not/used"), device_id="in-a-box")
    result = run_in(
        container,
        "sh",
        "-c",
        RUN_AND_STOP,
        volumes=(f"{config}:/etc/pilog/pilog.toml:ro",),
    )
    assert result.returncode == 0, result.stderr
    first, _, rest = result.stdout.partition("\n")
    assert first == "run exited 0", result.stderr
    assert "Traceback" not in result.stderr
    status = json.loads(rest)
    assert status["config"] == "/etc/pilog/pilog.toml"
    assert status["data_dir"] == "/data"
    assert status["device_id"] == "in-a-box"
    assert status["last_seq"] >= 1
    assert [d["sensor"] for d in status["drivers"]] == ["air"]
