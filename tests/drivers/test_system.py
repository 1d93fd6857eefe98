"""system: corpus /sys and /proc files in a tmp tree, then this machine's own /proc and /sys."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import CORPUS

from pilog.clock import SystemClock
from pilog.config import parse_config
from pilog.drivers.base import DriverContext
from pilog.drivers.system.driver import SystemDriver, SystemOptions, find_thermal_zones
from pilog.testing.drivers import open_driver, run_driver

SYS_CORPUS = CORPUS / "sys"
MEM_FIELDS = {"mem_total_bytes", "mem_available_bytes", "mem_used_bytes", "mem_used_pct"}
LOAD_FIELDS = {"load_1m", "load_5m", "load_15m", "tasks_runnable", "tasks_total"}
DISK_FIELDS = {"disk_total_bytes", "disk_free_bytes", "disk_used_bytes", "disk_used_pct"}


@pytest.fixture
def vectors() -> dict[str, Any]:
    path = CORPUS / "sys_vectors.json"
    if not path.is_file() or not SYS_CORPUS.is_dir():
        pytest.skip(f"corpus {SYS_CORPUS} is absent (shared test data, not in the repo)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def make_tree(
    root: Path, *, zones: dict[str, tuple[str, str]] | None = None, **proc: str
) -> tuple[Path, Path]:
    """A sysfs root with thermal zones ({folder: (type, temp)}) and a procfs root with files."""
    sysfs, procfs = root / "sys", root / "proc"
    thermal = sysfs / "class" / "thermal"
    thermal.mkdir(parents=True)
    procfs.mkdir()
    for folder, (kind, temp) in (zones or {}).items():
        (thermal / folder).mkdir()
        (thermal / folder / "type").write_text(kind + "\n")
        (thermal / folder / "temp").write_text(temp)
    for name, text in proc.items():
        (procfs / name).write_text(text)
    return sysfs, procfs


def poll_once(sysfs: Path, procfs: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """One poll's reading and the rejected counts, with the disk measured at /."""
    options = {"disk_path": "/", **(config or {})}
    with open_driver("system", options, sysfs_root=sysfs, procfs_root=procfs) as driver:
        [reading] = driver.poll()
        return {"values": reading, "rejected": dict(driver.rejected)}


# --- corpus files -------------------------------------------------------------------------


def test_corpus_cpu_temperatures(vectors: dict[str, Any], tmp_path: Path) -> None:
    good = [v for v in vectors["thermal_zone0_temp"] if isinstance(v["expected_C"], float)]
    assert len(good) == 3
    for i, vector in enumerate(good):
        temp = (SYS_CORPUS / vector["file"]).read_text()
        sysfs, procfs = make_tree(tmp_path / str(i), zones={"thermal_zone0": ("cpu-thermal", temp)})
        got = poll_once(sysfs, procfs)
        assert got["values"]["cpu_temp_c"] == pytest.approx(vector["expected_C"])
        assert got["values"]["cpu_temp_zone"] == "cpu-thermal"
        assert got["rejected"] == {}


def test_corpus_bogus_negative_temperature_is_rejected(
    vectors: dict[str, Any], tmp_path: Path
) -> None:
    [vector] = [v for v in vectors["thermal_zone0_temp"] if "implausible" in str(v["expected_C"])]
    temp = (SYS_CORPUS / vector["file"]).read_text()
    sysfs, procfs = make_tree(tmp_path, zones={"thermal_zone0": ("cpu-thermal", temp)})
    got = poll_once(sysfs, procfs)
    assert "cpu_temp_c" not in got["values"]
    assert "cpu_temp_zone" not in got["values"]
    assert got["rejected"] == {"cpu temperature out of range: -650788984 m°C": 1}


def test_corpus_85000_read_twice_is_kept(vectors: dict[str, Any], tmp_path: Path) -> None:
    # The file says 85000 on the re-read too: as a Pi 4 at its throttling point would.
    [vector] = [v for v in vectors["thermal_zone0_temp"] if "re-read" in str(v["expected_C"])]
    temp = (SYS_CORPUS / vector["file"]).read_text()
    sysfs, procfs = make_tree(tmp_path, zones={"thermal_zone0": ("cpu-thermal", temp)})
    got = poll_once(sysfs, procfs)
    assert got["values"]["cpu_temp_c"] == 85.0
    assert got["rejected"] == {}


def test_one_off_85000_is_replaced_by_the_re_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysfs, procfs = make_tree(tmp_path, zones={"thermal_zone0": ("cpu-thermal", "85000\n")})
    reads = iter(["85000\n", "47236\n"])
    options = {"disk_path": str(tmp_path / "gone")}
    with open_driver("system", options, sysfs_root=sysfs, procfs_root=procfs) as driver:
        monkeypatch.setattr(
            driver, "_read_text", lambda path, what: next(reads) if path.name == "temp" else None
        )
        [reading] = driver.poll()
        assert reading == {"cpu_temp_c": 47.236, "cpu_temp_zone": "cpu-thermal"}
        assert dict(driver.rejected) == {"cpu temperature: one-off 85000 m°C, re-read": 1}


def test_einval_from_the_thermal_zone_is_counted_and_other_fields_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # raspberrypi/linux#2136: reading thermal_zone0/temp fails with EINVAL now and then.
    # No file can be made to fail that way, so Path.read_text raises it for that one file.
    sysfs, procfs = make_tree(
        tmp_path, zones={"thermal_zone0": ("cpu-thermal", "40000\n")}, loadavg="0.5 0.4 0.3 1/9 7\n"
    )
    real_read_text = Path.read_text

    def read_text(path: Path, *args: Any, **kwargs: Any) -> str:
        if path.name == "temp":
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    got = poll_once(sysfs, procfs)
    assert "cpu_temp_c" not in got["values"]
    assert got["values"]["load_1m"] == 0.5
    assert got["rejected"] == {"cpu temperature: read failed (EINVAL)": 1}


def test_corpus_loadavg(vectors: dict[str, Any], tmp_path: Path) -> None:
    assert len(vectors["loadavg"]) == 2
    for i, vector in enumerate(vectors["loadavg"]):
        text = (SYS_CORPUS / vector["file"]).read_text()
        sysfs, procfs = make_tree(tmp_path / str(i), loadavg=text)
        got = poll_once(sysfs, procfs)
        want = vector["expected"]
        assert {k: got["values"][k] for k in LOAD_FIELDS} == {
            "load_1m": want["load1"],
            "load_5m": want["load5"],
            "load_15m": want["load15"],
            "tasks_runnable": want["running"],
            "tasks_total": want["total"],
        }
        assert got["rejected"] == {}


def test_corpus_meminfo_with_memavailable(vectors: dict[str, Any], tmp_path: Path) -> None:
    [vector] = [v for v in vectors["meminfo"] if "MemAvailable" in v["expected_kB"]]
    kib = vector["expected_kB"]
    sysfs, procfs = make_tree(tmp_path, meminfo=(SYS_CORPUS / vector["file"]).read_text())
    values = poll_once(sysfs, procfs)["values"]
    assert values["mem_total_bytes"] == kib["MemTotal"] * 1024
    assert values["mem_available_bytes"] == kib["MemAvailable"] * 1024
    assert values["mem_used_bytes"] == (kib["MemTotal"] - kib["MemAvailable"]) * 1024
    assert values["mem_used_pct"] == pytest.approx(vector["expected_used_pct_by_available"], 1e-3)
    assert values["swap_total_bytes"] == kib["SwapTotal"] * 1024
    assert values["swap_used_bytes"] == (kib["SwapTotal"] - kib["SwapFree"]) * 1024


def test_corpus_meminfo_before_memavailable_falls_back(
    vectors: dict[str, Any], tmp_path: Path
) -> None:
    # Kernels before 3.14: MemFree + Buffers + Cached (109640 kB per the corpus note).
    [vector] = [v for v in vectors["meminfo"] if "MemAvailable" not in v["expected_kB"]]
    kib = vector["expected_kB"]
    sysfs, procfs = make_tree(tmp_path, meminfo=(SYS_CORPUS / vector["file"]).read_text())
    values = poll_once(sysfs, procfs)["values"]
    fallback = kib["MemFree"] + kib["Buffers"] + kib["Cached"]
    assert fallback == 109640
    assert values["mem_total_bytes"] == kib["MemTotal"] * 1024
    assert values["mem_available_bytes"] == fallback * 1024
    assert values["mem_used_bytes"] == (kib["MemTotal"] - fallback) * 1024
    assert values["swap_total_bytes"] == 0
    assert values["swap_used_bytes"] == 0


# --- zone choice, absent and bad files ------------------------------------------------------


def test_cpu_zone_is_preferred_over_lower_numbered_zones(tmp_path: Path) -> None:
    sysfs, procfs = make_tree(
        tmp_path,
        zones={
            "thermal_zone0": ("acpitz", "27800\n"),
            "thermal_zone2": ("iwlwifi_1", "41000\n"),
            "thermal_zone10": ("x86_pkg_temp", "52000\n"),
        },
    )
    assert [z.name for z in find_thermal_zones(sysfs)] == [
        "thermal_zone0",
        "thermal_zone2",
        "thermal_zone10",
    ]
    values = poll_once(sysfs, procfs)["values"]
    assert (values["cpu_temp_c"], values["cpu_temp_zone"]) == (52.0, "x86_pkg_temp")
    values = poll_once(sysfs, procfs, {"thermal_zone": "acpitz"})["values"]
    assert (values["cpu_temp_c"], values["cpu_temp_zone"]) == (27.8, "acpitz")
    values = poll_once(sysfs, procfs, {"thermal_zone": "thermal_zone2"})["values"]
    assert (values["cpu_temp_c"], values["cpu_temp_zone"]) == (41.0, "iwlwifi_1")


def test_without_a_cpu_zone_the_lowest_numbered_is_read(tmp_path: Path) -> None:
    sysfs, procfs = make_tree(
        tmp_path, zones={"thermal_zone3": ("acpitz", "31000\n"), "thermal_zone1": ("pch", "9\n")}
    )
    values = poll_once(sysfs, procfs)["values"]
    assert (values["cpu_temp_c"], values["cpu_temp_zone"]) == (0.009, "pch")


def test_named_zone_that_does_not_exist_fails_open(tmp_path: Path) -> None:
    sysfs, procfs = make_tree(tmp_path, zones={"thermal_zone0": ("cpu-thermal", "40000\n")})
    with pytest.raises(FileNotFoundError, match=r"no thermal zone 'gpu'.*thermal_zone0 \(cpu"):
        run_driver("system", {"thermal_zone": "gpu"}, sysfs_root=sysfs, procfs_root=procfs)


def test_absent_files_are_skipped_not_rejected(tmp_path: Path) -> None:
    sysfs, procfs = make_tree(tmp_path)
    with open_driver(
        "system", {"disk_path": str(tmp_path / "gone")}, sysfs_root=sysfs, procfs_root=procfs
    ) as driver:
        assert driver.poll() == []
        assert dict(driver.rejected) == {}
    # Only the disk is measurable: the reading has just its fields.
    with open_driver(
        "system", {"disk_path": str(tmp_path)}, sysfs_root=sysfs, procfs_root=procfs
    ) as driver:
        [reading] = driver.poll()
        assert set(reading) == DISK_FIELDS
        assert dict(driver.rejected) == {}


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"loadavg": "0.09 0.10\n"}, "loadavg: malformed"),
        ({"loadavg": "\0\0\0\0"}, "loadavg: malformed"),
        ({"loadavg": "a b c 1/2 3\n"}, "loadavg: malformed"),
        ({"meminfo": "MemFree:  100 kB\n"}, "meminfo: no MemTotal"),
        ({"meminfo": "MemTotal:  0 kB\n"}, "meminfo: no MemTotal"),
        ({"meminfo": "garbage\n\xff\n"}, "meminfo: no MemTotal"),
    ],
)
def test_malformed_proc_files_are_rejected(
    files: dict[str, str], reason: str, tmp_path: Path
) -> None:
    sysfs, procfs = make_tree(tmp_path, **files)
    got = poll_once(sysfs, procfs)
    assert set(got["values"]) == DISK_FIELDS
    assert got["rejected"] == {reason: 1}


@pytest.mark.parametrize(
    ("temp", "reason"),
    [
        ("", "cpu temperature: not an integer"),
        ("4a000\n", "cpu temperature: not an integer"),
        ("126000\n", "cpu temperature out of range: 126000 m°C"),
        ("-41000\n", "cpu temperature out of range: -41000 m°C"),
    ],
)
def test_bad_cpu_temperature_is_rejected(temp: str, reason: str, tmp_path: Path) -> None:
    sysfs, procfs = make_tree(tmp_path, zones={"thermal_zone0": ("cpu-thermal", temp)})
    got = poll_once(sysfs, procfs)
    assert "cpu_temp_c" not in got["values"]
    assert got["rejected"] == {reason: 1}


def test_unreadable_temp_is_counted_with_its_errno(tmp_path: Path) -> None:
    sysfs, procfs = make_tree(tmp_path, zones={"thermal_zone0": ("cpu-thermal", "1")})
    temp = sysfs / "class" / "thermal" / "thermal_zone0" / "temp"
    temp.unlink()
    temp.mkdir()  # reading a directory fails with EISDIR, a real OSError from the kernel
    got = poll_once(sysfs, procfs)
    assert got["rejected"] == {"cpu temperature: read failed (EISDIR)": 1}


# --- this machine ---------------------------------------------------------------------------


def test_this_machines_proc_and_sys(tmp_path: Path) -> None:
    proc, sys = Path("/proc"), Path("/sys")
    [values] = run_driver("system", {"disk_path": str(tmp_path)}, polls=1)
    assert all(isinstance(v, int | float | str) for v in values.values())
    if (proc / "loadavg").is_file():
        assert set(values) >= LOAD_FIELDS
        assert all(values[k] >= 0 for k in ("load_1m", "load_5m", "load_15m"))
        assert 0 <= values["tasks_runnable"] <= values["tasks_total"]
    if (proc / "meminfo").is_file():
        assert set(values) >= MEM_FIELDS
        # MemTotal is the kernel's totalram, which sysconf's page counts report too; a container
        # whose /proc/meminfo is virtualised (lxcfs) shows its limit, which is no larger.
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert 0 < values["mem_total_bytes"] <= physical
        assert 0 < values["mem_available_bytes"] <= values["mem_total_bytes"]
        assert values["mem_used_bytes"] + values["mem_available_bytes"] == values["mem_total_bytes"]
        assert 0 <= values["mem_used_pct"] <= 100
    if find_thermal_zones(sys):
        assert -40 <= values["cpu_temp_c"] <= 125
        assert isinstance(values["cpu_temp_zone"], str)
    else:
        assert "cpu_temp_c" not in values
    assert set(values) >= DISK_FIELDS
    # shutil.disk_usage is df(1)'s view: free = f_bavail (what non-root may use), used =
    # f_blocks - f_bfree. Other processes may write between the two statvfs calls, hence slack.
    usage, slack = shutil.disk_usage(tmp_path), 64 << 20
    assert values["disk_total_bytes"] == usage.total
    assert abs(values["disk_free_bytes"] - usage.free) <= slack
    assert abs(values["disk_used_bytes"] - usage.used) <= slack
    assert values["disk_used_bytes"] <= values["disk_total_bytes"]
    assert values["disk_free_bytes"] <= values["disk_total_bytes"]
    assert 0 <= values["disk_used_pct"] <= 100


def test_disk_total_agrees_with_df(tmp_path: Path) -> None:
    df = shutil.which("df")
    if df is None:
        pytest.skip("df(1) is not installed")
    out = subprocess.run(
        [df, "-B1", "--output=size", str(tmp_path)], capture_output=True, text=True, check=True
    )
    [values] = run_driver("system", {"disk_path": str(tmp_path)}, polls=1)
    assert values["disk_total_bytes"] == int(out.stdout.split()[-1])


def test_disk_of_the_data_dir_from_the_context(tmp_path: Path) -> None:
    # The runtime passes data_dir in the context; with no disk_path that is what is measured.
    sysfs, procfs = make_tree(tmp_path)
    sensor = parse_config({"sensor": [{"name": "h", "driver": "system"}]}, "<test>", {}).sensor[0]
    ctx = DriverContext(
        sensor,
        SystemOptions(),
        SystemClock(),
        sysfs_root=sysfs,
        procfs_root=procfs,
        data_dir=tmp_path,
    )
    driver = SystemDriver(ctx)
    driver.open()
    [reading] = driver.poll()
    assert set(reading) == DISK_FIELDS
    assert reading["disk_total_bytes"] == shutil.disk_usage(tmp_path).total
    # Before the runtime makes the data dir (`pilog check`), its parent's file system counts.
    ctx.data_dir = tmp_path / "not-yet" / "created"
    [reading] = driver.poll()
    assert reading["disk_total_bytes"] == shutil.disk_usage(tmp_path).total
