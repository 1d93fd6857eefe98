"""A clock that moves only when told to, for tests of time-dependent behaviour."""

from __future__ import annotations

import threading


class FakeClock:
    """Wall and monotonic nanoseconds, advanced by `advance` and stepped by `step_wall`."""

    def __init__(self, wall_ns: int = 1_795_000_000_000_000_000, mono_ns: int = 10**12) -> None:
        self._lock = threading.Lock()
        self._wall = wall_ns
        self._mono = mono_ns

    def wall_ns(self) -> int:
        with self._lock:
            return self._wall

    def mono_ns(self) -> int:
        with self._lock:
            return self._mono

    def advance(self, ns: int) -> None:
        """Let `ns` pass on both clocks."""
        with self._lock:
            self._wall += ns
            self._mono += ns

    def step_wall(self, ns: int) -> None:
        """Jump the wall clock only, as an NTP sync on a board without RTC does."""
        with self._lock:
            self._wall += ns
