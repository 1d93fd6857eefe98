"""A `FileSystem` over real files that remembers what is durable and can lose the rest.

In the manner of LevelDB's fault-injection env and Prometheus' `faultySegmentFile`: every call
goes to the real file, and beside it the filesystem keeps, per file, the content made durable
by the last `datasync` and the writes, truncations and allocations made since. `crash()` then
does what a power cut does: each file goes back to its durable content plus a random prefix of
what followed (the torn part optionally garbled), names whose directory was never synced may
vanish, and unlinks whose directory was never synced may be undone. Names of directories made
by `mkdir` are names in their parent like any other: a directory whose parent was never synced
since may vanish with everything in it, however durable its files are (POSIX; ext4's journal
usually hides this, other file systems do not).

A test usually runs:

    fs = FaultyFileSystem(seed=7)
    writer, _ = open_log(log_dir, quarantine_dir, options, fs=fs)
    ...
    fs.power_off()        # from now on nothing reaches the disk: every call fails with EIO
                          # (or fs.cut_power_after(n): the same, n calls later)
    writer.close()        # raises or not; the old writer can no longer touch the files
    fs.crash()            # the files as a power cut leaves them; the filesystem works again
    writer, repairs = open_log(log_dir, quarantine_dir, options, fs=fs)

and injects the faults a full or failing disk has: `fail_next_write` (a partial write, then
ENOSPC), `fail_next_datasync` (EIO), `fail_allocate` (ENOSPC), `fail_unlink` (EIO). Each
fault that fires is recorded in `fired`, so a test can tell that it did.

Simplifications, all in the direction of a kinder disk than a real one: unsynced writes reach
the disk in the order they were made, and a `datasync` that fails keeps its writes unsynced
(neither durable nor lost).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pilog.log.fsio import DIR_MODE, OsFileHandle

if TYPE_CHECKING:
    from pilog.log.fsio import FileHandle, FileSystem

Unsynced = Literal["random", "none", "all"]
FaultKind = Literal["write", "datasync", "allocate", "unlink"]


@dataclass(frozen=True, slots=True)
class _Write:
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _Truncate:
    size: int


@dataclass(frozen=True, slots=True)
class _Allocate:
    size: int


_Op = _Write | _Truncate | _Allocate


def _apply(buf: bytearray, op: _Op) -> None:
    """Do `op` to the in-memory image of a file."""
    if isinstance(op, _Write):
        end = op.offset + len(op.data)
        if end > len(buf):
            buf.extend(bytes(end - len(buf)))
        buf[op.offset : end] = op.data
    elif isinstance(op, _Truncate):
        if op.size < len(buf):
            del buf[op.size :]
        else:
            buf.extend(bytes(op.size - len(buf)))
    elif op.size > len(buf):
        buf.extend(bytes(op.size - len(buf)))


@dataclass(slots=True)
class _FileState:
    """What the disk holds of one file for sure, and what only the page cache holds."""

    durable: bytearray
    name_durable: bool  # the directory entry survives a power cut
    pending: list[_Op] = field(default_factory=list)

    def after_power_cut(self, rng: random.Random, unsynced: Unsynced, garble: bool) -> bytes:
        """The content a power cut leaves: durable bytes plus a prefix of the pending ops."""
        image = bytearray(self.durable)
        ops = self.pending
        keep = {"all": len(ops), "none": 0}.get(unsynced, rng.randint(0, len(ops)))
        for op in ops[:keep]:
            _apply(image, op)
        torn = ops[keep] if keep < len(ops) and unsynced == "random" else None
        if isinstance(torn, _Write) and torn.data and rng.random() < 0.5:
            # The write that was under way when power went: some of its bytes made it.
            cut = rng.randrange(len(torn.data))
            _apply(image, _Write(torn.offset, torn.data[:cut]))
            if garble:
                # A sector half-programmed when power went reads back as noise.
                noise = rng.randbytes(rng.randint(1, len(torn.data) - cut))
                _apply(image, _Write(torn.offset + cut, noise))
        return bytes(image)


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault waiting for its call; `times` None means until `clear_faults`."""

    kind: FaultKind
    err: int
    keep_bytes: int = 0
    times: int | None = 1


@dataclass(frozen=True, slots=True)
class FiredFault:
    """A fault that made a call fail."""

    kind: FaultKind
    path: Path
    err: int


@dataclass(slots=True)
class Stats:
    """Counts of the calls that matter for durability and wear."""

    writes: int = 0
    bytes_written: int = 0
    datasyncs: int = 0
    dir_syncs: int = 0


def _key(path: Path) -> Path:
    # The writer names one file as `log_dir / name` and its directory as `path.parent`;
    # absolute paths make both spellings meet.
    return Path(os.path.abspath(path))


class FaultyFileSystem:
    """Real files, a record of what is durable, power cuts and injected faults on demand.

    Thread-safe: every call holds one lock, so a power cut falls between two calls, never
    inside one. Files that existed before this object first touched them count as durable.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.fired: list[FiredFault] = []
        self.stats = Stats()
        self._lock = threading.RLock()
        self._files: dict[Path, _FileState] = {}
        self._unlinked: dict[Path, _FileState] = {}  # removed, but not yet durably
        self._new_dirs: set[Path] = set()  # made by `mkdir`, their parent not synced since
        self._handles: set[FaultyFileHandle] = set()
        self._faults: list[Fault] = []
        self._powered = True
        self._calls_left: int | None = None  # calls until the power goes off

    # -- faults --------------------------------------------------------------------------

    def fail_next_write(
        self, err: int = errno.ENOSPC, *, keep_bytes: int = 0, times: int | None = 1
    ) -> None:
        """Make the next `pwrite` write `keep_bytes` bytes, then raise OSError(`err`)."""
        self._arm(Fault("write", err, keep_bytes, times))

    def fail_next_datasync(self, err: int = errno.EIO, *, times: int | None = 1) -> None:
        """Make the next `datasync` raise OSError(`err`), its writes staying unsynced."""
        self._arm(Fault("datasync", err, 0, times))

    def fail_allocate(self, err: int = errno.ENOSPC, *, times: int | None = None) -> None:
        """Make `allocate` raise OSError(`err`), as on a disk too full to reserve space."""
        self._arm(Fault("allocate", err, 0, times))

    def fail_unlink(self, err: int = errno.EIO, *, times: int | None = 1) -> None:
        """Make `unlink` raise OSError(`err`), the name staying, as on a failing disk."""
        self._arm(Fault("unlink", err, 0, times))

    def clear_faults(self) -> None:
        """Disarm every fault not yet fired."""
        with self._lock:
            self._faults.clear()

    def armed(self, kind: FaultKind | None = None) -> list[Fault]:
        """The faults still waiting for their call (of `kind`, or all)."""
        with self._lock:
            return [f for f in self._faults if kind is None or f.kind == kind]

    def _arm(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, kind: FaultKind, path: Path) -> Fault | None:
        """The armed fault for this call, if any, counted as fired."""
        for i, fault in enumerate(self._faults):
            if fault.kind != kind:
                continue
            if fault.times is not None:
                left = fault.times - 1
                if left:
                    self._faults[i] = Fault(kind, fault.err, fault.keep_bytes, left)
                else:
                    del self._faults[i]
            self.fired.append(FiredFault(kind, path, fault.err))
            return fault
        return None

    # -- power ---------------------------------------------------------------------------

    def cut_power_after(self, calls: int) -> None:
        """Let `calls` more calls through, then fail every call as `power_off` does.

        Puts the power cut inside a commit, between any two of its calls (say, after a
        segment's header is written and before its directory is synced).
        """
        with self._lock:
            self._calls_left = calls

    def power_off(self) -> None:
        """Fail every call from now on with EIO, until `crash()` reboots the machine.

        Lets a test stop a writer (close it, join its thread) without any of its last
        calls reaching the disk: the moment of the power cut is the moment of this call.
        """
        with self._lock:
            self._powered = False

    def crash(
        self,
        *,
        unsynced: Unsynced = "random",
        garble: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        """Simulate a power cut and reboot: leave the files as a real disk could.

        `unsynced` says what becomes of everything not made durable: "random" keeps a random
        prefix of each file's unsynced writes (the write under way possibly torn, and with
        `garble` its torn part noise) and flips a coin for each unsynced name; "none" drops
        it all (LevelDB's `DropUnsyncedFileData`); "all" keeps it all (a process kill, not a
        power cut). Handles opened before are dead afterwards; the filesystem works again.
        """
        rng = rng or self.rng
        with self._lock:
            self._powered = False
            self._calls_left = None
            for handle in list(self._handles):
                handle.kill()
            survivors: dict[Path, bytes] = {}
            # Shallowest first: a directory that vanishes takes the ones inside it along.
            for directory in sorted(self._new_dirs, key=lambda d: len(d.parts)):
                if directory.exists() and not self._reached_disk(rng, unsynced):
                    shutil.rmtree(directory)
            for path, state in self._files.items():
                if not path.exists():
                    continue  # removed behind our back: not ours to bring back
                if state.name_durable or self._reached_disk(rng, unsynced):
                    survivors[path] = state.after_power_cut(rng, unsynced, garble)
                else:
                    path.unlink(missing_ok=True)
            for path, state in self._unlinked.items():
                if not path.parent.is_dir():
                    continue  # its directory vanished: so did the name
                if path not in survivors and not self._reached_disk(rng, unsynced):
                    survivors[path] = state.after_power_cut(rng, unsynced, garble)
            for path, content in survivors.items():
                _overwrite(path, content)
            # After the reboot, whatever is on disk is simply what is there: durable.
            self._files = {p: _FileState(bytearray(c), True) for p, c in survivors.items()}
            self._unlinked = {}
            self._new_dirs = set()
            self._powered = True

    def durable_view(self, directory: Path) -> dict[str, bytes]:
        """Name and content of each file in `directory` that a power cut now cannot take away.

        What `crash(unsynced="none")` would leave, without crashing: lets a test check that
        everything acknowledged as durable really is, after every step.
        """
        key = _key(directory)
        with self._lock:
            if any(d == key or d in key.parents for d in self._new_dirs):
                return {}  # the directory itself may vanish
            view = {
                p.name: bytes(s.durable)
                for p, s in (*self._files.items(), *self._unlinked.items())
                if p.parent == key and s.name_durable
            }
            for entry in key.iterdir() if key.is_dir() else ():
                if entry.is_file() and _key(entry) not in self._files:
                    view.setdefault(entry.name, entry.read_bytes())  # untouched: durable
            return view

    @staticmethod
    def _reached_disk(rng: random.Random, unsynced: Unsynced) -> bool:
        """Whether an unsynced create or unlink of a name survives the power cut."""
        if unsynced == "random":
            return rng.random() < 0.5
        return unsynced == "all"

    def _check_power(self, path: Path) -> None:
        if self._calls_left is not None:
            if self._calls_left == 0:
                self._powered, self._calls_left = False, None
            else:
                self._calls_left -= 1
        if not self._powered:
            raise OSError(errno.EIO, "power is off (FaultyFileSystem.power_off)", str(path))

    # -- FileSystem ----------------------------------------------------------------------

    def open(self, path: Path, *, create: bool) -> FaultyFileHandle:
        """Open `path` for reading and writing; `create` insists that it is new."""
        key = _key(path)
        with self._lock:
            self._check_power(key)
            flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
            fd = os.open(key, flags, 0o640)
            if create:
                self._files[key] = _FileState(bytearray(), name_durable=False)
            else:
                self._track(key)
            handle = FaultyFileHandle(self, OsFileHandle(fd, key))
            self._handles.add(handle)
            return handle

    def read_bytes(self, path: Path) -> bytes:
        """What a read sees now: the page cache, synced or not."""
        with self._lock:
            self._check_power(path)
            return path.read_bytes()

    def write_new(self, path: Path, data: bytes) -> None:
        """Write a whole file and datasync it; its name is durable after `sync_dir`."""
        key = _key(path)
        with self._lock:
            self._check_power(key)
            existed = self._track(key) if key.exists() else None
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                OsFileHandle(fd, key).pwrite(data, 0)
            finally:
                os.close(fd)
            self.stats.writes += 1
            self.stats.bytes_written += len(data)
            self.stats.datasyncs += 1
            name_durable = existed is not None and existed.name_durable
            self._files[key] = _FileState(bytearray(data), name_durable)

    def unlink(self, path: Path) -> None:
        """Remove a name; a power cut before `sync_dir` of its directory may bring it back."""
        key = _key(path)
        with self._lock:
            self._check_power(key)
            fault = self._take_fault("unlink", key)
            if fault is not None:
                raise OSError(fault.err, os.strerror(fault.err), str(key))
            state = self._track(key) if key.exists() else None
            key.unlink()
            self._files.pop(key, None)
            if state is not None and state.name_durable:
                self._unlinked[key] = state

    def rename(self, src: Path, dst: Path) -> None:
        """Replace `dst` by `src`; until `sync_dir` of the directory a power cut may undo it.

        Renaming a file that is open through this filesystem is not modelled.
        """
        skey, dkey = _key(src), _key(dst)
        with self._lock:
            self._check_power(dkey)
            state = self._track(skey)
            previous = self._track(dkey) if dkey.exists() else None
            os.replace(skey, dkey)
            del self._files[skey]
            # The old names stay on disk until the directory is synced: a crash may bring
            # back `src`, and `dst` as it was (its content is the durable one until then).
            if state.name_durable:
                self._unlinked[skey] = state
            if previous is not None and previous.name_durable:
                self._unlinked[dkey] = previous
            self._files[dkey] = _FileState(state.durable, False, state.pending)

    def mkdir(self, path: Path, mode: int = DIR_MODE) -> None:
        """Create one directory; its name is durable after `sync_dir` of its parent."""
        key = _key(path)
        with self._lock:
            self._check_power(key)
            key.mkdir(mode=mode)
            self._new_dirs.add(key)

    def sync_dir(self, path: Path) -> None:
        """Make the names created and removed in `path` durable."""
        key = _key(path)
        with self._lock:
            self._check_power(key)
            self.stats.dir_syncs += 1
            for file, state in self._files.items():
                if file.parent == key:
                    state.name_durable = True
            self._unlinked = {f: s for f, s in self._unlinked.items() if f.parent != key}
            self._new_dirs = {d for d in self._new_dirs if d.parent != key}

    def file_size(self, path: Path) -> int:
        """Size of the file as reads see it now."""
        with self._lock:
            self._check_power(path)
            return path.stat().st_size

    # -- bookkeeping for handles ---------------------------------------------------------

    def _track(self, key: Path) -> _FileState:
        """The state of an existing file, taking its current content as durable if new to us."""
        state = self._files.get(key)
        if state is None:
            state = _FileState(bytearray(key.read_bytes()), name_durable=True)
            self._files[key] = state
        return state

    def _record(self, key: Path, op: _Op) -> None:
        state = self._files.get(key)
        if state is not None:  # an unlinked file still open: nothing of it survives a crash
            state.pending.append(op)

    def _synced(self, key: Path) -> None:
        state = self._files.get(key)
        if state is not None:
            for op in state.pending:
                _apply(state.durable, op)
            state.pending.clear()

    def _closed(self, handle: FaultyFileHandle) -> None:
        self._handles.discard(handle)


class FaultyFileHandle:
    """An open file whose writes the filesystem records until they are made durable."""

    def __init__(self, fs: FaultyFileSystem, real: OsFileHandle) -> None:
        self._fs = fs
        self._real = real
        self.path = real.path
        self._dead = False  # the machine crashed under this handle
        self._closed = False

    def _check(self) -> None:
        if self._dead or self._closed:
            raise OSError(errno.EIO if self._dead else errno.EBADF, "file handle is gone")
        self._fs._check_power(self.path)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write all of `data` at `offset`, or part of it and raise an injected error."""
        with self._fs._lock:
            self._check()
            data = bytes(data)
            fault = self._fs._take_fault("write", self.path)
            if fault is not None:
                data = data[: fault.keep_bytes]
            if data:
                self._real.pwrite(data, offset)
                self._fs._record(self.path, _Write(offset, data))
            self._fs.stats.writes += 1
            self._fs.stats.bytes_written += len(data)
            if fault is not None:
                raise OSError(fault.err, os.strerror(fault.err), str(self.path))

    def pread(self, size: int, offset: int) -> bytes:
        """Read what the page cache holds."""
        with self._fs._lock:
            self._check()
            return self._real.pread(size, offset)

    def datasync(self) -> None:
        """Make every write to this file so far durable, or raise an injected error."""
        with self._fs._lock:
            self._check()
            fault = self._fs._take_fault("datasync", self.path)
            if fault is not None:
                raise OSError(fault.err, os.strerror(fault.err), str(self.path))
            self._fs.stats.datasyncs += 1
            self._fs._synced(self.path)

    def truncate(self, size: int) -> None:
        """Set the file's size; durable with the next `datasync`."""
        with self._fs._lock:
            self._check()
            self._real.truncate(size)
            self._fs._record(self.path, _Truncate(size))

    def allocate(self, size: int) -> None:
        """Reserve `size` bytes of zeros, or raise an injected error."""
        with self._fs._lock:
            self._check()
            fault = self._fs._take_fault("allocate", self.path)
            if fault is not None:
                raise OSError(fault.err, os.strerror(fault.err), str(self.path))
            self._real.allocate(size)
            if self._real.size() < size:  # no fallocate on this filesystem: extend instead
                self._real.truncate(size)
            self._fs._record(self.path, _Allocate(size))

    def size(self) -> int:
        """The file's size as reads see it now."""
        with self._fs._lock:
            self._check()
            return self._real.size()

    def close(self) -> None:
        """Close the file; never fails, as closing a dead process's file cannot."""
        with self._fs._lock:
            if not self._closed and not self._dead:
                self._real.close()
            self._closed = True
            self._fs._closed(self)

    def kill(self) -> None:
        """Close the descriptor as a dying process does; later calls raise EIO."""
        if not self._closed and not self._dead:
            self._real.close()
        self._dead = True
        self._fs._closed(self)


def _overwrite(path: Path, content: bytes) -> None:
    """Put `content` in the real file at `path`, whatever was there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        OsFileHandle(fd, path).pwrite(content, 0)
        os.ftruncate(fd, len(content))
    finally:
        os.close(fd)


if TYPE_CHECKING:
    # mypy checks here that the fakes satisfy the protocols the writer is typed against.
    _fs: FileSystem = FaultyFileSystem()
    _handle: FileHandle = FaultyFileSystem().open(Path(), create=False)
