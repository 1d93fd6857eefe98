"""Prove that pilog installs and runs on Raspberry Pi OS-like arm64 and armhf, under qemu-user.

For each target (`arm64`, `armhf`, `armhf-pip`: a Debian architecture, and after a dash an
alternative install path) this builds a Debian bookworm root with debootstrap, once (kept as
a tarball in the cache dir), and in a fresh copy of it, chrooted, runs the install commands of
docs/install.md marked `<!-- arm-check: TARGET -->`, with a wheel built from this checkout;
then, as a normal user, `pilog run` on the embedded default config, `status`, `tail`,
`verify`, `show latest`; then the checkout's tests/log and tests/projections. Foreign binaries
run under qemu-user through binfmt_misc. The cache dir also keeps apt's .debs, pip's cache
(the wheels it compiled) and the root as it is after the docs' leading apt commands.

Usage (root):  python3 tools/arm_check.py [--arch arm64,armhf] [--cache DIR] [--keep]
Exit 0 when every target passed, or when the check cannot run here (said loudly on one line).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL_DOC = ROOT / "docs" / "install.md"
SUITE = "bookworm"
DEFAULT_CACHE = Path("/var/cache/pilog-arm")
DEFAULT_WORK = Path("/var/tmp/pilog-arm-check")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
QEMU_BINFMT = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}
VENV = "/opt/pilog"  # where docs/install.md puts pilog; the systemd unit names it too
WHEEL_PLACEHOLDER = "pilog-<version>-py3-none-any.whl"
USER = "pi"  # Raspberry Pi OS's customary first user; any unprivileged user would do
TEST_PATHS = ("tests/log", "tests/projections")
TEST_PACKAGES = ("pytest", "hypothesis", "pytest-timeout")
# pytest-timeout's limit per test, raised from pyproject's 300 s: emulation is 10-30x slower.
TEST_TIMEOUT_S = 1800
RUN_SECONDS = 20.0
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TAIL_LINES = 40

_BLOCK_RE = re.compile(
    r"^<!--\s*arm-check:(?P<targets>[^>]*?)-->[ \t]*\n```sh\n(?P<body>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_SUMMARY_RE = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")
# A wheel tagged linux_ARCH (not manylinux) in pip's cache is one pip compiled on a former run.
_CACHED_BUILD_RE = re.compile(r"Using cached ([A-Za-z0-9_.]+?)-[^-]+-[^-]+-[^-]+-linux_\w+\.whl")
_BUILD_RE = re.compile(r"Building wheel for (?P<name>\S+) \(.*\): (?P<state>started|finished)")
_BUILD_DEPS_RE = re.compile(r"^  Installing build dependencies: (?P<state>started|finished)")


def command_blocks(markdown: str) -> dict[str, list[str]]:
    """The ```sh blocks of a page that follow an `<!-- arm-check: TARGET ... -->` line, by target.

    A marker not directly followed by a ```sh block is an error: the check would silently skip it.
    """
    blocks: dict[str, list[str]] = {}
    matches = list(_BLOCK_RE.finditer(markdown))
    if len(matches) != markdown.count("<!-- arm-check:"):
        raise ValueError("an `<!-- arm-check: ... -->` line is not followed by a ```sh block")
    for match in matches:
        targets = match["targets"].replace(",", " ").split()
        if not targets:
            raise ValueError("an `<!-- arm-check: -->` line names no target")
        for target in targets:
            blocks.setdefault(target, []).append(match["body"])
    return blocks


def debian_arch(target: str) -> str:
    """`armhf-pip` → `armhf`: the part of a target before its install-path suffix."""
    return target.split("-", 1)[0]


# ---------------------------------------------------------------------------------------------
# Outcome of one target


class StepFailedError(Exception):
    """A step of one target failed; carries the tail of that step's output."""

    def __init__(self, step: str, reason: str, output: Sequence[str] = ()) -> None:
        super().__init__(f"{step}: {reason}")
        self.step, self.reason, self.tail = step, reason, list(output)[-TAIL_LINES:]


@dataclass
class Figures:
    target: str
    debootstrap_s: float | None = None  # None: the cached root was used
    install_s: float = 0.0  # the commands after the leading apt ones
    apt_cached: bool = False  # the root after the apt commands came from the cache
    commands: list[tuple[str, float]] = field(default_factory=list)  # the docs' sudo lines
    builds: dict[str, float] = field(default_factory=dict)  # C builds pip ran, seconds each
    cached_builds: list[str] = field(default_factory=list)  # C builds of a former run
    lmdb_from: str = "?"
    events: int = 0
    tests: dict[str, int] = field(default_factory=dict)
    tests_s: float = 0.0
    profile: str = ""
    test_failures: list[str] = field(default_factory=list)
    failure: StepFailedError | None = None


@dataclass
class Output:
    rc: int
    lines: list[tuple[float, str]]  # (seconds since start, line)
    seconds: float
    timed_out: bool = False

    @property
    def text(self) -> list[str]:
        return [line for _, line in self.lines]


_sessions: set[int] = set()  # sessions of the commands running now, ended on an interrupt
_sessions_lock = threading.Lock()
_stopping = threading.Event()


def started(pid: int) -> None:
    """Note a command's session; end it at once if the check is being interrupted."""
    with _sessions_lock:
        _sessions.add(pid)
        if _stopping.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def end_sessions() -> None:
    """SIGKILL every command still running (each leads a session of its own); start no more."""
    with _sessions_lock:
        _stopping.set()
        for pid in _sessions:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def stream(argv: Sequence[str], log: Path, timeout: float, env: dict[str, str]) -> Output:
    """Run argv to completion, its output time-stamped line by line and appended to `log`."""
    start = time.monotonic()
    lines: list[tuple[float, str]] = []
    timed_out = threading.Event()
    with (
        log.open("a", encoding="utf-8") as sink,
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,  # a timeout kills the whole tree, chrooted children too
        ) as proc,
    ):
        sink.write(f"\n$ {shlex.join(argv)}\n")
        started(proc.pid)

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append((time.monotonic() - start, line.rstrip("\n")))
                sink.write(f"[{lines[-1][0]:7.1f}] {line}")
                sink.flush()
        finally:
            timer.cancel()
        rc = proc.wait()
        _sessions.discard(proc.pid)
    return Output(rc, lines, time.monotonic() - start, timed_out.is_set())


# ---------------------------------------------------------------------------------------------
# Pristine roots: debootstrap once, kept as a plain tarball


def mirror() -> str:
    """The host's Debian mirror: the roots fetch from where apt here already can."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return DEFAULT_MIRROR


def pristine_root(arch: str, cache: Path, work: Path, log: Path) -> float | None:
    """Make `cache/bookworm-ARCH.tar` unless it exists; return debootstrap's seconds or None.

    The tarball appears under its final name only when complete (written aside, then renamed):
    others build container base images from it as soon as it is there.
    """
    tarball = cache / f"{SUITE}-{arch}.tar"
    if tarball.exists():
        return None
    target = work / f"debootstrap-{arch}"
    shutil.rmtree(target, ignore_errors=True)
    # In a mount namespace of its own: the proc and sys debootstrap mounts in the root cannot
    # outlive it, even when it fails halfway.
    argv = [
        "unshare", "--mount", "--propagation", "private", "--",
        "debootstrap", f"--arch={arch}", "--variant=minbase", SUITE, str(target), mirror(),
    ]  # fmt: skip
    out = stream(argv, log, 3600, dict(os.environ))
    if out.rc != 0:
        raise StepFailedError("debootstrap", f"exit {out.rc}", out.text)
    # The .debs debootstrap leaves behind are installed already: not part of a root to ship.
    for deb in (target / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    partial = tarball.with_name(f".{tarball.name}.partial")
    subprocess.run(
        ["tar", "--numeric-owner", "-cf", str(partial), "-C", str(target), "."], check=True
    )
    partial.rename(tarball)
    shutil.rmtree(target)
    return out.seconds


# ---------------------------------------------------------------------------------------------
# A working copy of the root, and commands run in it


class Chroot:
    """A fresh copy of a pristine root; commands run chrooted in a private mount namespace.

    Each command gets its own `unshare --mount` namespace, so proc, sys, dev and the cache
    bind mounts vanish with its last process however the check ends: nothing to unmount.
    """

    def __init__(self, target: str, cache: Path, work: Path) -> None:
        self.target, self.arch = target, debian_arch(target)
        self.path = work / target / "root"
        self.log = work / f"{target}.log"
        self.apt_cache = cache / f"apt-{self.arch}"
        self.pip_cache = cache / f"pip-{self.arch}"
        self.tarball = cache / f"{SUITE}-{self.arch}.tar"
        self.cache = cache
        self.uid = self.gid = 0

    def unpack(self, tarball: Path) -> None:
        """A fresh root from a tarball: the pristine root, or one with the docs' apt commands."""
        self.remove()
        self.path.mkdir(parents=True)
        tar = ["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(self.path)]
        subprocess.run(tar, check=True)
        for cache in (self.apt_cache / "partial", self.pip_cache):
            cache.mkdir(parents=True, exist_ok=True)
        shutil.copy("/etc/resolv.conf", self.path / "etc/resolv.conf")
        self.find_user()

    def setup(self) -> None:
        """What a pristine root needs for this host's network, for apt, and a normal user."""
        (self.path / "root/.cache/pip").mkdir(parents=True, exist_ok=True)
        # PyPI is reached through a TLS proxy only the host's CA bundle trusts; apt does not
        # manage this path, so installing ca-certificates in the root cannot replace it.
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.exists():
            shutil.copy(bundle, self.path / "etc/ssl-host-ca.crt")
            (self.path / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl-host-ca.crt\n")
        # `apt install` without -y, as a person types it, must not stop at its question; keep
        # the .debs for the next run (the apt binary deletes them by default).
        (self.path / "etc/apt/apt.conf.d/90arm-check").write_text(
            'APT::Get::Assume-Yes "true";\nBinary::apt::APT::Keep-Downloaded-Packages "true";\n'
        )
        # dpkg's fsyncs cost much under emulation and buy nothing in a throwaway root.
        (self.path / "etc/dpkg/dpkg.cfg.d/90arm-check").write_text("force-unsafe-io\n")
        self.run(f"useradd --create-home --shell /bin/bash {USER}", "add user", timeout=300)
        self.find_user()

    def find_user(self) -> None:
        """USER's uid and gid, once setup() has added USER."""
        for line in (self.path / "etc/passwd").read_text().splitlines():
            name, _, uid, gid, *_ = line.split(":")
            if name == USER:
                self.uid, self.gid = int(uid), int(gid)

    def pack(self, tarball: Path) -> None:
        """The root as a tarball, under its name only once complete."""
        partial = tarball.with_name(f".{tarball.name}.partial")
        tar = ["tar", "--numeric-owner", "-cf", str(partial), "-C", str(self.path), "."]
        subprocess.run(tar, check=True)
        partial.rename(tarball)

    def remove(self) -> None:
        """Kill what still runs in the root (started by this check), then delete it."""
        if not self.path.exists():
            return
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(proc / "root")) == self.path:
                        os.kill(int(proc.name), signal.SIGKILL)
        mounts = Path("/proc/self/mountinfo").read_text()
        if f" {self.path}/" in mounts:  # never rm -rf through a mount that escaped
            raise RuntimeError(f"{self.path} still has mounts: {mounts}")
        shutil.rmtree(self.path.parent)

    def argv(self, script: str, *, user: bool) -> list[str]:
        """unshare → mounts → chroot (as USER if `user`) → sh -ec script."""
        mounts = (
            "r=$1; a=$2; p=$3; shift 3\n"
            'mount -t proc proc "$r/proc"\n'
            'mount -t sysfs -o ro sysfs "$r/sys"\n'
            'mount --bind /dev "$r/dev"\n'
            'mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"\n'
            'mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$r/dev/pts"\n'
            'mount --bind "$r/dev/pts/ptmx" "$r/dev/ptmx"\n'
            'mount --bind "$a" "$r/var/cache/apt/archives"\n'
            'mount --bind "$p" "$r/root/.cache/pip"\n'
            'exec "$@"\n'
        )
        who = [f"--userspec={self.uid}:{self.gid}", f"--groups={self.gid}"] if user else []
        return [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-ec", mounts, "arm-check",
            str(self.path), str(self.apt_cache), str(self.pip_cache),
            "chroot", *who, str(self.path), "/bin/sh", "-ec", script,
        ]  # fmt: skip

    def env(self, *, user: bool) -> dict[str, str]:
        home = f"/home/{USER}" if user else "/root"
        name = USER if user else "root"
        return {
            "PATH": CHROOT_PATH, "HOME": home, "USER": name, "LOGNAME": name,
            "LANG": "C.UTF-8", "TERM": "dumb", "DEBIAN_FRONTEND": "noninteractive",
        }  # fmt: skip

    def run(self, script: str, step: str, *, user: bool = False, timeout: float) -> Output:
        """Run a shell script in the root; raise StepFailedError unless it exits 0."""
        out = stream(self.argv(script, user=user), self.log, timeout, self.env(user=user))
        if out.timed_out:
            raise StepFailedError(step, f"no end after {timeout:.0f} s, killed", out.text)
        if out.rc != 0:
            raise StepFailedError(step, f"exit {out.rc}", out.text)
        return out


# ---------------------------------------------------------------------------------------------
# The steps


# The docs' `sudo`: commands run as root here already. The end line times each command.
SUDO = (
    'sudo() { case "$1" in -*) echo "sudo $1: not supported by arm_check" >&2; return 2;; esac;'
    ' "$@"; echo "arm-check: end" >&2; }\n'
)


def command_times(lines: Sequence[tuple[float, str]]) -> list[tuple[str, float]]:
    """Seconds of each `sudo` command of a traced (`set -x`) install script's output."""
    times, begun = [], None
    for at, line in lines:
        if line.startswith("+ sudo "):
            begun = (line.removeprefix("+ sudo "), at)
        elif line == "arm-check: end" and begun:
            times.append((begun[0], at - begun[1]))
            begun = None
    return times


def split_apt(script: str) -> tuple[str, str]:
    """The script's `sudo apt …` lines, in order, and the rest.

    apt's lines are run first and their result cached, wherever a block puts them: a later
    section's `apt install` (libpq5 for an extra) installs from Debian independently of pip.
    """
    apt, rest = [], []
    for line in script.splitlines(keepends=True):
        is_apt = re.match(r"sudo apt(-get)? [^\\]*$", line) or not line.strip("\n").strip()
        (apt if is_apt else rest).append(line)
    return "".join(apt), "".join(rest)


def pip_builds(lines: Sequence[tuple[float, str]], figures: Figures) -> None:
    """The compiles in pip's output, timed; and the wheels pip compiled on a former run."""
    # pip prints `Building wheel for X` for what it compiles, but a build dependency compiled
    # to build X (cffi for lmdb) only as the time `Installing build dependencies` takes.
    started: dict[str, float] = {}
    collecting = ""
    for at, line in lines:
        if match := _CACHED_BUILD_RE.search(line):
            figures.cached_builds.append(match[1])
            continue
        if match := _BUILD_RE.search(line):
            name = match["name"]
        elif match := _BUILD_DEPS_RE.search(line):
            name = f"{collecting}'s build dependencies"
        elif line.startswith("Collecting "):
            collecting = re.split(r"[<>=!~;\[ ]", line.removeprefix("Collecting "))[0]
            continue
        else:
            continue
        if match["state"] == "started":
            started[name] = at
        else:
            figures.builds[name] = at - started.get(name, at)


def install(root: Chroot, blocks: list[str], wheel: Path, figures: Figures, fresh: bool) -> None:
    """docs/install.md's blocks for the target, in a directory holding the wheel.

    The root after the blocks' leading apt commands is kept in the cache, keyed by those
    commands and the pristine root: a warm run starts from it and runs the rest.
    """
    script = "\n".join(blocks)
    if WHEEL_PLACEHOLDER not in script:
        raise StepFailedError("install", f"the docs' commands do not name {WHEEL_PLACEHOLDER}")
    apt, rest = split_apt(script.replace(WHEEL_PLACEHOLDER, wheel.name))
    pristine = root.tarball.stat()
    # Keyed by what made the layer: the pristine root, the setup of a root, the commands.
    made_by = f"{pristine.st_size} {pristine.st_mtime_ns}\n{inspect.getsource(Chroot.setup)}{apt}"
    key = hashlib.sha256(made_by.encode()).hexdigest()
    layer = root.cache / "layers" / f"{root.target}-{key[:16]}.tar"
    times = layer.with_suffix(".json")
    if layer.exists() and times.exists() and not fresh:
        root.unpack(layer)
        figures.apt_cached = True
        figures.commands = [(c, s) for c, s in json.loads(times.read_text())]
    else:
        root.unpack(root.tarball)
        root.setup()
        (root.path / "root/install").mkdir()
        out = root.run(f"set -x\n{SUDO}cd /root/install\n{apt}", "install: apt", timeout=3600)
        figures.commands = command_times(out.lines)
        layer.parent.mkdir(exist_ok=True)
        for old in layer.parent.glob(f"{root.target}-*"):
            old.unlink()
        root.pack(layer)
        times.write_text(json.dumps(figures.commands))
    shutil.copy(wheel, root.path / "root/install" / wheel.name)
    out = root.run(f"set -x\n{SUDO}cd /root/install\n{rest}", "install", timeout=3600)
    figures.install_s = out.seconds
    figures.commands += command_times(out.lines)
    pip_builds(out.lines, figures)
    if not (root.path / VENV.lstrip("/") / "bin/pilog").exists():
        raise StepFailedError("install", f"the docs' commands made no {VENV}/bin/pilog", out.text)
    probe = (
        f"{VENV}/bin/python -c 'import importlib.metadata as m, lmdb; "
        'print(m.version("lmdb"), "from", lmdb.__file__)\''
    )
    figures.lmdb_from = root.run(probe, "import lmdb", user=True, timeout=300).text[-1]


def exercise(root: Chroot, figures: Figures) -> None:
    """As USER: `pilog run` on the embedded default for RUN_SECONDS, then the reading commands."""
    home = root.path / "home" / USER
    (home / "run").mkdir()
    os.chown(home / "run", root.uid, root.gid)
    script = f"cd ~/run\nexec {VENV}/bin/pilog run"
    argv, env = root.argv(script, user=True), root.env(user=True)
    lines: list[str] = []
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    ) as proc:
        started(proc.pid)
        running = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if "pilog running" in line:
                    running.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # The exec chain (unshare, sh, chroot, sh) ends in pilog itself: proc.pid is pilog.
        if not running.wait(300):
            proc.kill()
            raise StepFailedError("pilog run", "no 'pilog running' within 300 s", lines)
        time.sleep(RUN_SECONDS)
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise StepFailedError("pilog run", "still running 120 s after SIGTERM", lines) from None
        reader.join(10)
        _sessions.discard(proc.pid)
    with root.log.open("a", encoding="utf-8") as sink:
        sink.write("\n$ pilog run\n" + "\n".join(lines) + "\n")
    if rc != 0:
        raise StepFailedError("pilog run", f"exit {rc} after SIGTERM", lines)

    def pilog(args: str) -> list[str]:
        return root.run(f"cd ~/run\n{VENV}/bin/pilog {args}", f"pilog {args}", user=True,
                        timeout=300).text  # fmt: skip

    status_text = pilog("status --json")
    # stderr is merged here: skip the line saying which data dir the embedded default means.
    status = json.loads("\n".join(x for x in status_text if not x.startswith("pilog: ")))
    if not status["last_seq"] or status["last_seq"] <= 0 or status["index"] != "ok":
        raise StepFailedError("pilog status", "no events, or the index is not ok", status_text)
    figures.events = status["last_seq"] - status["first_seq"] + 1
    pilog("status")
    tail = pilog("tail --from -10")
    events = [json.loads(line) for line in tail if line.startswith("{")]
    if not any(e["type"] == "reading" and e.get("sensor") == "demo" for e in events):
        raise StepFailedError("pilog tail", "no reading of sensor demo in the last 10", tail)
    verify = pilog("verify")
    if not verify or not verify[-1].startswith("ok:"):
        raise StepFailedError("pilog verify", "no 'ok:' line", verify)
    latest = "\n".join(pilog("show latest"))
    if "demo" not in latest or "temperature_c" not in latest:
        raise StepFailedError("pilog show latest", "no demo temperature_c", latest.splitlines())


def test_requirements(checkout: Path) -> list[str]:
    """pytest, hypothesis, pytest-timeout as pyproject's dev extra pins them."""
    project = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]
    dev = project["optional-dependencies"]["dev"]
    wanted = [req for req in dev if re.split(r"[<>=!~; \[]", req)[0] in TEST_PACKAGES]
    assert len(wanted) == len(TEST_PACKAGES), wanted
    return wanted


def hypothesis_profile(checkout: Path) -> str:
    """The suite's profile for emulation if its conftest registers one, else hypothesis's "ci".

    Both have no deadline (an example takes 10-30x longer under qemu) and no too_slow health
    check; "ci" also derandomizes.
    """
    conftest = (checkout / "tests/conftest.py").read_text()
    return "emulated" if re.search(r"register_profile\(\s*\"emulated\"", conftest) else "ci"


def run_tests(root: Chroot, checkout: Path, figures: Figures) -> None:
    """The checkout's tests (not its pilog/: the installed one is tested) as USER."""
    requirements = " ".join(shlex.quote(r) for r in test_requirements(checkout))
    root.run(f"{VENV}/bin/pip install --quiet {requirements}", "pip install tests", timeout=1800)
    inside = root.path / "home" / USER / "checkout"
    shutil.copytree(checkout, inside, symlinks=True)
    for path in [inside, *inside.rglob("*")]:
        os.lchown(path, root.uid, root.gid)
    figures.profile = hypothesis_profile(checkout)
    pytest_args = [
        "-p", "no:cacheprovider", "-q", "--durations=5",
        f"--hypothesis-profile={figures.profile}", f"--timeout={TEST_TIMEOUT_S}", *TEST_PATHS,
    ]  # fmt: skip
    # The log's state machine takes its profile from this variable, not from the option: at
    # its own (300 examples of 40 steps) it alone takes about 6 minutes under qemu.
    script = (
        f"cd ~/checkout\nexport PILOG_LOG_MACHINE_PROFILE={figures.profile}\n"
        f"exec {VENV}/bin/python -m pytest {shlex.join(pytest_args)}"
    )
    out = stream(root.argv(script, user=True), root.log, 2 * 3600, root.env(user=True))
    figures.tests_s = out.seconds
    summaries = [line for line in out.text if " in " in line and _SUMMARY_RE.search(line)]
    summary = summaries[-1] if summaries else "(no summary line)"
    figures.tests = {
        kind.rstrip("s") if kind.startswith("error") else kind: int(n)
        for n, kind in _SUMMARY_RE.findall(summary)
    }
    text = out.text
    at = next((i for i, line in enumerate(text) if "short test summary info" in line), len(text))
    figures.test_failures = [line for line in text[at:] if line.startswith(("FAILED ", "ERROR "))]
    if out.rc != 0 or figures.tests.get("failed") or figures.tests.get("error"):
        reason = "killed at the time limit" if out.timed_out else f"pytest exit {out.rc}"
        raise StepFailedError("tests", f"{reason}: {summary.strip('= ')}", out.text)


def check_target(
    target: str, args: argparse.Namespace, source: Source, ready: dict[str, threading.Event]
) -> Figures:
    """One target from root to tests; any failure is recorded, not raised."""
    figures = Figures(target)
    root = Chroot(target, args.cache, args.work)
    root.log.write_text("")
    try:
        arch = root.arch
        if not ready[arch].is_set():  # two targets of one arch debootstrap it once
            with _arch_locks[arch]:
                if not ready[arch].is_set():
                    if not root.tarball.exists():
                        progress(target, f"debootstrap of {SUITE} {arch}")
                    figures.debootstrap_s = pristine_root(arch, args.cache, args.work, root.log)
                    ready[arch].set()
        progress(target, "install")
        install(root, source.blocks.get(target, []), source.wheel, figures, args.fresh_apt)
        progress(target, f"installed in {figures.install_s:.0f} s; pilog run")
        exercise(root, figures)
        progress(target, f"pilog run wrote {figures.events} events; tests")
        run_tests(root, source.checkout, figures)
        progress(target, "passed")
    except StepFailedError as e:
        figures.failure = e
        progress(target, f"FAILED at {e.step}: {e.reason}")
    except Exception as e:  # a bug here, or the host (disk full): still report the others
        figures.failure = StepFailedError("arm_check", repr(e), traceback.format_exc().split("\n"))
        progress(target, f"FAILED: {e!r}")
    finally:
        if not args.keep:
            root.remove()
    return figures


_arch_locks = {arch: threading.Lock() for arch in QEMU_BINFMT}
_print_lock = threading.Lock()
_start = time.monotonic()


def progress(target: str, what: str) -> None:
    with _print_lock:
        print(f"[{time.monotonic() - _start:6.0f} s] {target}: {what}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Preconditions, the wheel, the report


def cannot_run(arches: set[str]) -> str | None:
    """Why the check cannot run on this machine at all, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mount)"
    for tool in ("debootstrap", "unshare", "chroot", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: debootstrap, util-linux, coreutils, tar)"
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=False)
    if not (binfmt / "status").exists():
        return "binfmt_misc is not mounted and could not be mounted"
    for arch in sorted(arches):
        entry = binfmt / QEMU_BINFMT[arch]
        if not entry.exists() and shutil.which("update-binfmts"):
            # Registered at qemu-user-static's install, unless binfmt_misc was not mounted then.
            enable = ["update-binfmts", "--enable", QEMU_BINFMT[arch]]
            subprocess.run(enable, check=False, capture_output=True)
        if not entry.exists() or not entry.read_text().startswith("enabled"):
            return f"no binfmt_misc entry {entry} (Debian: qemu-user-static, binfmt-support)"
        if "F" not in entry.read_text().split("flags:", 1)[1].split("\n", 1)[0]:
            return f"{entry} lacks the F flag: the interpreter must work inside a chroot"
    return None


@dataclass
class Source:
    wheel: Path  # pilog-*.whl of the checkout
    checkout: Path  # its tests/, docs/ and pyproject.toml, copied when the wheel was built
    blocks: dict[str, list[str]]  # docs/install.md's commands by target


def snapshot(out_dir: Path) -> Source:
    """The checkout's wheel and tests, taken together: others may be editing the tree."""
    checkout = out_dir / "checkout"
    for tree in ("tests", "docs"):  # tests/log/test_format_doc.py reads docs/log-format.md
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / tree, checkout / tree, symlinks=True, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", checkout)  # pytest's options: markers, timeout
    python = sys.executable
    probe = [python, "-m", "pip", "--version"]
    if subprocess.run(probe, check=False, capture_output=True).returncode:
        python = str(ROOT / ".venv/bin/python")  # a system python3 without pip
    # pilog is pure Python: one wheel for every arch.
    subprocess.run(
        [python, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir), str(ROOT)],
        check=True,
    )
    (wheel,) = out_dir.glob("pilog-*-py3-none-any.whl")
    blocks = command_blocks((checkout / "docs/install.md").read_text(encoding="utf-8"))
    return Source(wheel, checkout, blocks)


def report(all_figures: list[Figures], total_s: float) -> None:
    """The figures, one block per target, then the failures with their output's tail."""
    print(f"\narm check: {SUITE} under qemu-user, total {total_s:.0f} s")
    for f in all_figures:
        boot = "cached" if f.debootstrap_s is None else f"{f.debootstrap_s:.0f} s"
        builds = ", ".join(
            [f"{name} {s:.0f} s" for name, s in f.builds.items()]
            + [f"{name} (cached from a former run)" for name in f.cached_builds]
        )
        print(f"  {f.target:10} {'FAILED' if f.failure else 'ok'}")
        print(f"    debootstrap  {boot}")
        builds = builds or "none"
        apt = "apt from the cache; when run" if f.apt_cached else "apt run"
        print(f"    install      {f.install_s:.0f} s after the apt commands; C builds: {builds}")
        for command, seconds in f.commands:
            note = f"  ({apt})" if command.startswith("apt") else ""
            print(f"      {seconds:5.0f} s  {command}{note}")
        print(f"    lmdb         {f.lmdb_from}")
        print(f"    pilog run    {f.events} events in {RUN_SECONDS:.0f} s")
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(f.tests.items())) or "not run"
        paths = " ".join(TEST_PATHS)
        print(f"    tests        {counts} in {f.tests_s:.0f} s ({paths}, profile {f.profile})")
        for line in f.test_failures:
            print(f"      {line}")
    for f in all_figures:
        if f.failure:
            print(f"\n== {f.target} failed at {f.failure.step}: {f.failure.reason}; last lines:")
            for line in f.failure.tail:
                print(f"   | {line}")
    sys.stdout.flush()


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """One check at a time per cache dir (roots, .debs, wheels) and per work dir (roots, logs)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another arm check using {directory}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add = parser.add_argument
    add("--arch", default="arm64,armhf", help="targets, comma-separated: arm64, armhf, armhf-pip")
    add("--cache", type=Path, default=DEFAULT_CACHE, help="roots, .debs and pip's cache")
    add("--work", type=Path, default=DEFAULT_WORK, help="where roots are unpacked; the logs")
    add("--keep", action="store_true", help="keep the roots for a look inside")
    add("--fresh-apt", action="store_true", help="run the docs' apt commands, cached or not")
    args = parser.parse_args(argv)
    targets = args.arch.split(",")
    marked = command_blocks(INSTALL_DOC.read_text(encoding="utf-8"))
    for target in targets:
        if debian_arch(target) not in QEMU_BINFMT or target not in marked:
            parser.error(f"no target {target!r}: docs/install.md marks {sorted(marked)}")
    if reason := cannot_run({debian_arch(t) for t in targets}):
        print(f"ARM CHECK SKIPPED, NOTHING WAS TESTED: {reason}", flush=True)
        return 0
    args.cache, args.work = args.cache.resolve(), args.work.resolve()
    with (
        exclusive(args.cache),
        exclusive(args.work),
        tempfile.TemporaryDirectory(dir=args.work) as tmp,
    ):
        source = snapshot(Path(tmp))
        progress("host", f"built {source.wheel.name}; logs in {args.work}/TARGET.log")
        ready = {arch: threading.Event() for arch in QEMU_BINFMT}
        # qemu-user runs each process on one thread: one target per core.
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            jobs = [pool.submit(check_target, t, args, source, ready) for t in targets]
            # The commands run in sessions of their own: a ^C or a SIGTERM to this process
            # reaches none of them. End them, then the targets fail and remove their roots.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
            try:
                results = [job.result() for job in jobs]
            finally:
                end_sessions()
    report(results, time.monotonic() - _start)
    return 1 if any(f.failure for f in results) else 0


if __name__ == "__main__":
    sys.exit(main())
