"""The container image: it builds from the Dockerfile, runs as pilog, logs to /data, stops cleanly.

Built with buildah (`--isolation chroot`, root) on the local `debian:bookworm-slim` base, which
`make-base-image` (beside the checkout, in shared/tools) makes when it is missing; a cold
build of both takes about two minutes, `--layers` makes the next ones take seconds. The tests
skip, saying why, when buildah, root or the base image is missing.

The arm64 and armv7 images are built and run the same way under QEMU user emulation, on bases
that tools/make_arm_base_image makes; without those bases their tests skip (they are not made
here: a cold armv7 build is many minutes of emulated compiling, docs/install.md says how long).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
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
ARM_BUILD_S = 3600.0  # the same under emulation, where armv7 compiles msgspec, lmdb and cffi
RUN_S = 300.0
ARM_RUN_S = 900.0  # every python start is emulated: `pilog status` takes seconds
BUILD = ("buildah", "bud", "--isolation", "chroot", "--pull=never", "--layers")
BUILDAH = ("buildah", "run", "--isolation", "chroot")


# Inside the container: start `pilog run`, wait (bounded) until `pilog status` sees it logging,
# its last_seq matching the grep pattern `last_seq`, stop it with SIGTERM as `docker stop` does,
# report its exit status and what status saw.
def run_and_stop(last_seq: str = "[1-9]") -> str:
    """The script; by default it stops `pilog run` once one event is logged."""
    return f"""
pilog run 2>/tmp/run.err & pid=$!
n=0
until pilog status --json >/tmp/status.json 2>/dev/null \\
    && grep -q '"writer_pid": [0-9]' /tmp/status.json \\
    && grep -q '"last_seq": {last_seq}' /tmp/status.json; do
  n=$((n + 1))
  if [ "$n" -gt 600 ]; then kill -KILL "$pid"; cat /tmp/run.err >&2; exit 99; fi
  sleep 0.1
done
kill -TERM "$pid"; wait "$pid"; echo "run exited $?"
cat /tmp/run.err >&2
cat /tmp/status.json
"""


@dataclass(frozen=True)
class ArmTarget:
    platform: str
    debian_arch: str  # tools/make_arm_base_image's argument
    base: str  # the image that tool makes
    machine: str  # `uname -m` inside, under emulation

    @property
    def tag(self) -> str:
        return f"localhost/pilog:test-{self.base.split('/')[1]}"


ARM_TARGETS = (
    ArmTarget("linux/arm64", "arm64", "docker.io/arm64v8/debian:bookworm-slim", "aarch64"),
    ArmTarget("linux/arm/v7", "armhf", "docker.io/arm32v7/debian:bookworm-slim", "armv7l"),
)
QEMU_BINFMT = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _image_present(name: str) -> bool:
    listed = subprocess.run(
        ["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return name in listed.stdout.split()


def _require_buildah_as_root() -> None:
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (Debian package `buildah`)")
    if os.geteuid() != 0:
        pytest.skip("buildah --isolation chroot builds need root")


def _build(tag: str, *options: str, timeout: float) -> None:
    built = subprocess.run(
        [*BUILD, *options, "-t", tag, ROOT],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert built.returncode == 0, _tail(built.stdout + built.stderr)


@pytest.fixture(scope="module")
def image() -> str:
    """The image built from the checkout's Dockerfile (its base made first if need be)."""
    _require_buildah_as_root()
    if not _image_present(BASE_IMAGE):
        if not MAKE_BASE_IMAGE.exists():
            pytest.skip(f"no {BASE_IMAGE} image, and no {MAKE_BASE_IMAGE} to make one")
        made = subprocess.run(
            [MAKE_BASE_IMAGE], capture_output=True, text=True, timeout=BUILD_S, check=False
        )
        if made.returncode != 0:
            pytest.skip(f"no {BASE_IMAGE} image; {MAKE_BASE_IMAGE} failed: {_tail(made.stdout)}")
    _build(TAG, timeout=BUILD_S)
    return TAG


@pytest.fixture(scope="module", params=ARM_TARGETS, ids=lambda t: t.debian_arch)
def arm_image(request: pytest.FixtureRequest) -> ArmTarget:
    """The image built for an arm platform, on the base that tools/make_arm_base_image made."""
    target: ArmTarget = request.param
    _require_buildah_as_root()
    binfmt = Path("/proc/sys/fs/binfmt_misc") / QEMU_BINFMT[target.debian_arch]
    if not binfmt.exists():
        pytest.skip(f"no {binfmt}: QEMU user emulation (qemu-user-static, binfmt-support)")
    if not _image_present(target.base):
        pytest.skip(
            f"no {target.base} image: `tools/make_arm_base_image {target.debian_arch}` makes it"
        )
    _build(target.tag, "--platform", target.platform, timeout=ARM_BUILD_S)
    return target


def _container_of(image: str) -> Iterator[str]:
    made = subprocess.run(
        ["buildah", "from", "--pull=never", image], capture_output=True, text=True, check=True
    )
    name = made.stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


@pytest.fixture
def container(image: str) -> Iterator[str]:
    yield from _container_of(image)


@pytest.fixture
def arm_container(arm_image: ArmTarget) -> Iterator[str]:
    yield from _container_of(arm_image.tag)


def run_in(
    container: str, *argv: str, volumes: tuple[str, ...] = (), timeout: float = RUN_S
) -> subprocess.CompletedProcess[str]:
    """`argv` run in the container as its image's user, from its image's environment."""
    mounts = [arg for volume in volumes for arg in ("-v", volume)]
    return subprocess.run(
        [*BUILDAH, *mounts, container, "--", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_image_prints_the_checkouts_version(container: str) -> None:
    result = run_in(container, "pilog", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pilog {__version__}"


def test_the_image_loads_its_c_modules_and_has_the_spi_extra(container: str) -> None:
    result = run_in(container, "python3", "-c", "import lmdb.cpython, msgspec, spidev")
    assert result.returncode == 0, result.stderr


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
        run_and_stop(),
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


@pytest.mark.timeout(ARM_BUILD_S + 2 * ARM_RUN_S)
def test_the_arm_image_is_for_its_platform_and_loads_its_c_modules(
    arm_image: ArmTarget, arm_container: str
) -> None:
    script = "uname -m; pilog --version; python3 -c 'import lmdb.cpython, msgspec, spidev'"
    result = run_in(arm_container, "sh", "-c", script, timeout=ARM_RUN_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [arm_image.machine, f"pilog {__version__}"]


@pytest.mark.timeout(ARM_BUILD_S + 2 * ARM_RUN_S)
def test_run_in_the_arm_image_on_the_embedded_default_logs_and_stops_cleanly(
    arm_container: str,
) -> None:
    # last_seq of 10 or more: about ten seconds of the demo sensor's one event a second.
    result = run_in(arm_container, "sh", "-c", run_and_stop("[1-9][0-9]"), timeout=ARM_RUN_S)
    assert result.returncode == 0, result.stderr
    first, _, rest = result.stdout.partition("\n")
    assert first == "run exited 0", result.stderr
    assert "Traceback" not in result.stderr
    status = json.loads(rest)
    assert status["config"] == "<embedded default>"
    assert status["data_dir"] == "/data"
    assert status["last_seq"] >= 10
    assert [d["sensor"] for d in status["drivers"]] == ["demo", "host"]
