"""The storage under the data dir (from a sysfs tree) and the durability window in force."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import pilog, write_config

from pilog.config import load_config
from pilog.durability import durability
from pilog.storage import Storage, storage_of

# Where a Raspberry Pi's devices sit in sysfs (a Pi 4: SD card on the emmc2 controller, a USB
# stick and a USB SSD behind the VL805 hub), as /sys/dev/block/MAJ:MIN links resolve.
_PI4_USB = "platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb2/2-2"


def _disk(
    sysfs: Path, devpath: str, name: str, majmin: str, attrs: dict[str, str], part: str = ""
) -> Path:
    """A disk (and a partition of it) under sysfs/devices, linked from sysfs/dev/block."""
    disk = sysfs / "devices" / devpath / "block" / name
    (disk / "queue").mkdir(parents=True, exist_ok=True)
    (disk / "device").mkdir(exist_ok=True)
    for rel, value in attrs.items():
        (disk / rel).write_text(value + "\n")
    node = disk
    if part:
        node = disk / part
        node.mkdir()
        (node / "partition").write_text("2\n")
    link = sysfs / "dev" / "block" / majmin
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(node, link.parent))
    return node


def _on(tmp_path: Path, sysfs: Path, majmin: str) -> Path:
    """A sysfs tree in which tmp_path's own device is `majmin`'s disk: re-point the link."""
    st = tmp_path.stat()
    real = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    links = sysfs / "dev" / "block"
    target = os.readlink(links / majmin)
    (links / majmin).unlink()
    (links / real).symlink_to(target)
    return sysfs


@pytest.mark.parametrize(
    ("devpath", "name", "attrs", "part", "expected"),
    [
        (
            "platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa",
            "mmcblk0",
            {"device/type": "SD", "queue/rotational": "0", "removable": "0"},
            "mmcblk0p2",
            Storage("sd", "mmcblk0"),
        ),
        (
            "platform/soc/fe340000.mmc/mmc_host/mmc1/mmc1:0001",
            "mmcblk1",
            {"device/type": "MMC", "queue/rotational": "0", "removable": "0"},
            "mmcblk1p1",
            Storage("emmc", "mmcblk1"),
        ),
        (
            f"{_PI4_USB}/2-2:1.0/host0/target0:0:0/0:0:0:0",
            "sda",
            {"queue/rotational": "1", "removable": "1"},
            "sda1",
            Storage("usb-flash", "sda"),
        ),
        (
            f"{_PI4_USB}/2-2:1.0/host1/target1:0:0/1:0:0:0",
            "sdb",
            {"queue/rotational": "1", "removable": "0"},
            "sdb1",
            Storage("disk", "sdb"),
        ),
        (
            "pci0000:00/0000:00:04.0/nvme/nvme0",
            "nvme0n1",
            {"queue/rotational": "0", "removable": "0"},
            "nvme0n1p1",
            Storage("ssd", "nvme0n1"),
        ),
    ],
)
def test_the_data_dirs_device_is_classified_from_sysfs(
    tmp_path: Path,
    devpath: str,
    name: str,
    attrs: dict[str, str],
    part: str,
    expected: Storage,
) -> None:
    sysfs = tmp_path / "sys"
    _disk(sysfs, devpath, name, "9:9", attrs, part)

    found = storage_of(tmp_path / "not" / "yet" / "made", _on(tmp_path, sysfs, "9:9"))

    assert found == expected
    assert found.flash == (expected.kind in ("sd", "emmc", "usb-flash"))


def test_device_mapper_is_followed_to_the_card_under_it(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    card = _disk(
        sysfs,
        "platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa",
        "mmcblk0",
        "179:0",
        {"device/type": "SD"},
        part="mmcblk0p2",
    )
    crypt = _disk(sysfs, "virtual", "dm-0", "9:9", {"queue/rotational": "0"})
    (crypt / "slaves").mkdir()
    (crypt / "slaves" / "mmcblk0p2").symlink_to(card)

    assert storage_of(tmp_path, _on(tmp_path, sysfs, "9:9")) == Storage("sd", "mmcblk0")


def test_no_block_device_is_unknown(tmp_path: Path) -> None:
    assert storage_of(tmp_path, tmp_path / "empty-sysfs").kind == "unknown"


def test_the_window_says_where_its_setting_came_from(tmp_path: Path) -> None:
    path = write_config(tmp_path / "pilog.toml", tmp_path / "data")
    flash = Storage("sd", "mmcblk0")

    default = durability(load_config(path, {}), flash)
    from_env = durability(load_config(path, {"PILOG_LOG__FSYNC_INTERVAL_MS": "250"}), flash)

    assert default.window_ms == 1000
    assert "log.fsync_interval_ms = 1000 (the default)" in default.summary()
    assert "an SD card (mmcblk0)" in default.summary()
    assert default.advice == ""
    assert from_env.window_ms == 250
    assert "from $PILOG_LOG__FSYNC_INTERVAL_MS" in from_env.why
    assert "raise log.fsync_interval_ms to 1000" in from_env.advice  # it wears the card


def test_a_window_set_in_the_file_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "pilog.toml", tmp_path / "data", log={"fsync_interval_ms": 100})

    window = durability(load_config(path, {}), Storage("ssd", "nvme0n1"))

    assert window.why == f"log.fsync_interval_ms = 100 (from {path})"
    assert window.advice == ""  # an SSD is not worn out by it the way a card is


def test_fsync_never_and_always_say_what_a_power_cut_loses(tmp_path: Path) -> None:
    sd = Storage("sd", "mmcblk0")
    never = durability(
        load_config(write_config(tmp_path / "a.toml", tmp_path, log={"fsync": "never"}), {}), sd
    )
    always = durability(
        load_config(write_config(tmp_path / "b.toml", tmp_path, log={"fsync": "always"}), {}), sd
    )

    assert never.window_ms is None
    assert "not written back" in never.summary()
    assert always.window_ms == 0
    assert "loses nothing appended" in always.summary()
    assert "every append costs at least one block" in always.advice


def test_check_and_status_report_the_window_in_force(tmp_path: Path) -> None:
    path = write_config(tmp_path / "pilog.toml", tmp_path / "data", log={"fsync_interval_ms": 300})
    env = {"PILOG_LOG__FSYNC_INTERVAL_MS": "700"}
    (tmp_path / "data" / "log").mkdir(parents=True)  # status refuses a place pilog never ran

    check = pilog("check", "--json", "-c", path, env=env)
    status = pilog("status", "--json", "-c", path, env=env)

    assert check.returncode == 0, check.stderr
    (row,) = [o for o in json.loads(check.stdout) if o["what"] == "durability"]
    assert "last 700 ms of readings" in row["detail"]
    assert "$PILOG_LOG__FSYNC_INTERVAL_MS" in row["detail"]
    assert status.returncode == 0, status.stderr
    window = json.loads(status.stdout)["durability"]
    assert window["of"] == "this config (pilog not running)"
    assert window["window_ms"] == 700
    assert window["why"] == "log.fsync_interval_ms = 700 (from $PILOG_LOG__FSYNC_INTERVAL_MS)"
