"""Time sources: wall (UTC ns), monotonic (ns) and the boot id; a seam for tests."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


class Clock(Protocol):
    """What the runtime reads the time from. `mono_ns` never goes backwards within a boot."""

    def wall_ns(self) -> int: ...
    def mono_ns(self) -> int: ...


class SystemClock:
    """The machine's clocks. Monotonic is CLOCK_BOOTTIME so suspend does not hide steps."""

    def __init__(self) -> None:
        # Bound builtins, not methods: read once per event on the append path.
        self.wall_ns: Callable[[], int] = time.time_ns
        self.mono_ns: Callable[[], int] = functools.partial(
            time.clock_gettime_ns, time.CLOCK_BOOTTIME
        )


def boot_id(path: Path = BOOT_ID_PATH) -> bytes:
    """The kernel's id of this boot (16 bytes); a random one where the kernel has none."""
    try:
        return uuid.UUID(path.read_text().strip()).bytes
    except (OSError, ValueError):
        return uuid.uuid4().bytes
