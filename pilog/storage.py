"""What kind of device a path is stored on, from sysfs: an SD card, eMMC, USB flash, an SSD,
a spinning disk. Flash wears out by the bytes written to it, so `pilog check` and
`pilog status` say what the data dir is on next to the durability window in force.

The block device of a path is /sys/dev/block/MAJOR:MINOR of its st_dev; a partition's disk
is its parent directory. Loop devices are followed to their backing file, device-mapper and
md devices to their first component (/sys/block/NAME/slaves). Anything else (tmpfs, a
network file system, no sysfs) is "unknown".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pilog.mounts import existing_ancestor

SYSFS = Path("/sys")
FLASH_KINDS = frozenset({"sd", "emmc", "usb-flash"})
_MAX_HOPS = 4  # loop over dm over loop... a bound, not a depth seen in practice

_DESCRIPTIONS = {
    "sd": "an SD card",
    "emmc": "eMMC flash",
    "usb-flash": "USB flash",
    "ssd": "an SSD",
    "disk": "a spinning disk",
    "unknown": "an unknown device",
}


@dataclass(frozen=True, slots=True)
class Storage:
    """The device a path is on: `kind` is one of sd, emmc, usb-flash, ssd, disk, unknown."""

    kind: str
    device: str  # the disk's kernel name (mmcblk0, sda, nvme0n1), "" when unknown

    @property
    def flash(self) -> bool:
        """Cheap flash without wear levelling worth the name: every write shortens its life."""
        return self.kind in FLASH_KINDS

    def describe(self) -> str:
        text = _DESCRIPTIONS.get(self.kind, self.kind)
        return f"{text} ({self.device})" if self.device else text

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "device": self.device, "flash": self.flash}


UNKNOWN = Storage("unknown", "")


def storage_of(path: Path, sysfs: Path = SYSFS) -> Storage:
    """The device `path` (or, while it does not exist yet, its nearest parent) is stored on."""
    try:
        dev = existing_ancestor(path).stat().st_dev
    except OSError:
        return UNKNOWN
    return _classify_dev(os.major(dev), os.minor(dev), sysfs, _MAX_HOPS)


def _classify_dev(major: int, minor: int, sysfs: Path, hops: int) -> Storage:
    node = sysfs / "dev" / "block" / f"{major}:{minor}"
    try:
        block = node.resolve(strict=True)
    except OSError:
        return UNKNOWN  # no block device: tmpfs, overlay, NFS, btrfs subvolumes, no sysfs
    disk = block.parent if (block / "partition").exists() else block
    return _classify_disk(disk, sysfs, hops)


def _classify_disk(disk: Path, sysfs: Path, hops: int) -> Storage:
    name = disk.name
    if hops <= 0:
        return Storage("unknown", name)
    if name.startswith("loop"):
        backing = _read(disk / "loop" / "backing_file")
        if backing and Path(backing).exists():
            found = storage_of(Path(backing), sysfs)
            return found if found.kind != "unknown" else Storage("unknown", name)
        return Storage("unknown", name)
    slaves = sorted((disk / "slaves").glob("*")) if (disk / "slaves").is_dir() else []
    if slaves:  # device-mapper (LUKS, LVM) or md: what it is built on
        try:
            component = slaves[0].resolve(strict=True)
        except OSError:
            return Storage("unknown", name)
        inner = component.parent if (component / "partition").exists() else component
        return _classify_disk(inner, sysfs, hops - 1)
    if name.startswith("mmcblk"):
        # The card's type as the MMC core read it: "SD" for SD cards, "MMC" for eMMC.
        kind = _read(disk / "device" / "type")
        return Storage("emmc" if kind == "MMC" else "sd", name)
    rotational = _read(disk / "queue" / "rotational") == "1"
    if "/usb" in str(disk):
        # A USB stick reports removable media, or no seek penalty; a USB disk spins.
        removable = _read(disk / "removable") == "1"
        return Storage("usb-flash" if removable or not rotational else "disk", name)
    return Storage("disk" if rotational else "ssd", name)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
