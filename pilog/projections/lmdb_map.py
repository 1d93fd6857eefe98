"""The projections' lmdb map: its size for the address space, growing it, remapping safely.

lmdb maps the whole map into the process's address space, however little the file holds. A
64-bit process has address space to spare. A 32-bit one (Raspberry Pi OS armhf) has about
3 GiB for everything: a few 1 GiB maps already fail there with `lmdb.MemoryError`, a 2 GiB
one always does. So the map starts at a size the address space affords, and a commit that
finds it full (`MDB_MAP_FULL`) doubles it, up to a ceiling, and runs again.

Sizes measured with 20 sensors x 5 fields, `latest` and `rollup` with windows ["1m", "1h"]
each keeping 10,000 windows: the store holds 2.0 million keys in 200 MiB, and a day of 5 s
commits after that leaves it at 200 MiB (about 1 MiB per sensor field and window length).
"""

from __future__ import annotations

import mmap
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pilog.counts import counted

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
MAP_SIZE_BYTES = 1 * GIB  # 64-bit: address space is plentiful
MAP_SIZE_MAX_BYTES = 1 << 40  # 64-bit: the disk, not the map, is the limit (lmdb says so)
MAP_SIZE_BYTES_32BIT = 512 * MIB  # 2.5 x the measured 200 MiB
MAP_SIZE_MAX_BYTES_32BIT = 1 * GIB  # maps beside CPython in a 32-bit process; 2 GiB does not
MAP_SIZE_MIN_BYTES = 64 * KIB  # lmdb's meta pages, the main and a few sub-databases


def is_32bit() -> bool:
    """This process has a 32-bit address space (armhf, i386), whatever the kernel."""
    return sys.maxsize < 2**32


def whole_pages(n: int) -> int:
    """`n` rounded up to whole OS pages (what lmdb maps)."""
    return -(-n // mmap.PAGESIZE) * mmap.PAGESIZE


def size_text(n: int) -> str:
    """A size as pilog.toml writes it: "512MiB", "64KiB", else bytes."""
    for unit, k in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= k and n % k == 0:
            return f"{n // k}{unit}"
    return counted(n, "byte")


def address_space_free(size: int) -> bool:
    """Whether `size` bytes of contiguous address space can be mapped now.

    Probed with an inaccessible private mapping, which costs no memory. lmdb unmaps the old
    map before it maps the new one and cannot go back when that fails: ask first.
    """
    try:
        probe = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE, prot=0)
    except OSError:
        return False
    probe.close()
    return True


@dataclass(frozen=True)
class MapLimits:
    """The map a writer starts with and the most it grows to, in bytes (whole pages)."""

    initial: int
    ceiling: int

    def grown(self, current: int) -> int | None:
        """The size after a map of `current` bytes was full: double, at most the ceiling;
        None when it is at the ceiling already."""
        if current >= self.ceiling:
            return None
        return min(self.ceiling, whole_pages(2 * current))


def map_limits(map_size: int | None = None, map_size_max: int | None = None) -> MapLimits:
    """The configured sizes, else what this process's address space affords.

    An explicit `map_size` above the ceiling raises the ceiling to it.
    """
    small = is_32bit()
    ceiling = map_size_max
    if ceiling is None:
        ceiling = MAP_SIZE_MAX_BYTES_32BIT if small else MAP_SIZE_MAX_BYTES
    initial = map_size
    if initial is None:
        initial = min(ceiling, MAP_SIZE_BYTES_32BIT if small else MAP_SIZE_BYTES)
    initial = whole_pages(max(initial, MAP_SIZE_MIN_BYTES))
    return MapLimits(initial, max(initial, whole_pages(ceiling)))


class TxnGate:
    """Transactions of one process pass it together; a remap of the map passes it alone.

    lmdb: `mdb_env_set_mapsize` may be called only when no transaction is active in the
    process, and it does not check. A transaction may be nested in another of the same
    thread (shared entries count up), so a waiting remap never holds new ones back: it waits
    for a moment with none, which comes between any two commits.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._active = 0
        self._remapping = False

    @contextmanager
    def txn(self) -> Iterator[None]:
        with self._cv:
            while self._remapping:
                self._cv.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cv:
                self._active -= 1
                if not self._active:
                    self._cv.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        """No transaction of this process runs inside (the caller must hold none)."""
        with self._cv:
            while self._remapping or self._active:
                self._cv.wait()
            self._remapping = True
        try:
            yield
        finally:
            with self._cv:
                self._remapping = False
                self._cv.notify_all()
