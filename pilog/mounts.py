"""Which filesystem a path is on, from /proc/self/mountinfo: for the warnings a box with a
tmpfs or overlay root (data lost at reboot) or a read-only root deserves."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

VOLATILE_TYPES = frozenset({"tmpfs", "ramfs", "overlay", "zram"})


@dataclass(frozen=True, slots=True)
class Mount:
    point: str
    fstype: str
    options: frozenset[str]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options

    @property
    def volatile(self) -> bool:
        """Its contents are gone after a reboot (RAM-backed, or an overlay root's upper)."""
        return self.fstype in VOLATILE_TYPES


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rest = left.split(), right.split()
        if len(fields) < 6 or len(rest) < 1:
            continue
        options = set(fields[5].split(","))
        if len(rest) >= 3:
            options |= set(rest[2].split(","))  # superblock options: a ro filesystem says so here
        mounts.append(Mount(_unescape(fields[4]), rest[0], frozenset(options)))
    return mounts


def mount_of(path: Path, mountinfo: str | None = None) -> Mount | None:
    """The mount `path` (or its nearest existing ancestor) is on; None if unknown."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = Path(os.path.realpath(existing_ancestor(path)))
    best: Mount | None = None
    for m in parse_mountinfo(mountinfo):
        point = Path(m.point)
        if (target == point or point in target.parents) and (
            best is None or len(m.point) >= len(best.point)
        ):
            best = m  # later mounts on the same point hide earlier ones
    return best


def existing_ancestor(path: Path) -> Path:
    """`path` if it exists, else its nearest ancestor that does."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p
