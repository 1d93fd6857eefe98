"""Every on-disk name under a data dir, built and parsed in one place.

Segment files are named by their base seq, zero-padded to 20 digits, so that name order is
seq order (`log/00000000000000000000.seg`).
"""

from __future__ import annotations

import re
from pathlib import Path

SEGMENT_SUFFIX = ".seg"
REPAIR_SUFFIX = ".repair"  # a repaired segment being written, before it replaces the damaged one
SEQ_DIGITS = 20
LOG_DIR = "log"
QUARANTINE_DIR = "quarantine"
LOCK_FILE = "LOCK"
INDEX_FILE = "index.sqlite"
PROJECTIONS_DIR = "projections"
DEADLETTER_DIR = "deadletter"
CONTROL_SOCKET = "control.sock"
LMDB_DATA_FILE = "data.mdb"  # lmdb's own names inside PROJECTIONS_DIR
LMDB_LOCK_FILE = "lock.mdb"

_SEGMENT_RE = re.compile(r"^(\d{20})\.seg$")


def segment_name(base_seq: int) -> str:
    """File name of the segment whose first frame has seq `base_seq`."""
    if base_seq < 0:
        raise ValueError(f"negative base seq {base_seq}")
    return f"{base_seq:0{SEQ_DIGITS}d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """Base seq of a segment file name, or None for any other file."""
    m = _SEGMENT_RE.match(name)
    return int(m.group(1)) if m else None


def list_segments(log_dir: Path) -> list[tuple[int, Path]]:
    """(base seq, path) of every segment in `log_dir`, in seq order; [] if it does not exist."""
    try:
        names = [e.name for e in log_dir.iterdir()]
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        base = parse_segment_name(name)
        if base is not None:
            found.append((base, log_dir / name))
    found.sort()
    return found


def deadletter_name(sink: str) -> str:
    """Name of the file under DEADLETTER_DIR that keeps the readings `sink` refused."""
    return f"{sink}.ndjson"


def quarantine_name(segment: str, offset: int, stamp_ns: int) -> str:
    """Name of the file keeping bytes cut from `segment` at `offset`."""
    return f"{segment}.{offset}.{stamp_ns}.torn"


def damaged_name(segment: str, stamp_ns: int) -> str:
    """Name of the file keeping a damaged sealed segment, whole, as it was before `pilog repair`."""
    return f"{segment}.{stamp_ns}.damaged"
