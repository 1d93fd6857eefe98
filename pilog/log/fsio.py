"""The filesystem seam of the log writer.

The writer does all its I/O through a `FileSystem`, so that tests can inject the faults a
real disk has (`pilog.testing.faultyfs`). Implementations must guarantee:

- `FileHandle.pwrite` writes all bytes or raises `OSError`; bytes written before the error
  may or may not be in the file.
- After `FileHandle.datasync` returns, every byte written to that file before the call
  survives a power cut. If it raises, nothing about unsynced bytes is known.
- After `FileSystem.sync_dir` returns, the names created or removed in that directory
  before the call survive a power cut (files and directories alike; before it, a power cut
  may take a new directory away with everything in it, whatever was synced inside).
- `FileSystem.rename` replaces `dst` by `src` atomically; like a new name, the change
  survives a power cut once the directory is synced (before, either name may be there).
- `FileSystem.mkdir` creates one directory whose parent exists, and raises FileExistsError
  when the name is taken; `make_dirs` builds every missing level on it, each made durable.

Readers in other processes (`tail`, `verify`, `status`) use plain file reads, not this seam.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Protocol

DIR_MODE = 0o750  # of the directories pilog itself uses
PARENT_DIR_MODE = 0o777  # of missing parents, less the umask: not pilog's to restrict


class FileHandle(Protocol):
    """An open file the writer appends to."""

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None: ...
    def pread(self, size: int, offset: int) -> bytes: ...
    def datasync(self) -> None: ...
    def truncate(self, size: int) -> None: ...
    def allocate(self, size: int) -> None: ...
    def size(self) -> int: ...
    def close(self) -> None: ...


class FileSystem(Protocol):
    """Directory-level operations the writer needs."""

    def open(self, path: Path, *, create: bool) -> FileHandle: ...
    def read_bytes(self, path: Path) -> bytes: ...
    def write_new(self, path: Path, data: bytes) -> None: ...
    def unlink(self, path: Path) -> None: ...
    def rename(self, src: Path, dst: Path) -> None: ...
    def mkdir(self, path: Path, mode: int = DIR_MODE) -> None: ...
    def sync_dir(self, path: Path) -> None: ...
    def file_size(self, path: Path) -> int: ...


class OsFileHandle:
    """A file descriptor with the handful of calls the writer makes."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n

    def pread(self, size: int, offset: int) -> bytes:
        chunks = []
        while size > 0:
            chunk = os.pread(self._fd, size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def datasync(self) -> None:
        os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def allocate(self, size: int) -> None:
        # Writing into preallocated space spares ext4 a journal commit for the file size on
        # every fdatasync (measured: half the device bytes per small synced append).
        try:
            os.posix_fallocate(self._fd, 0, size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        os.close(self._fd)


class OsFileSystem:
    """The real filesystem."""

    def open(self, path: Path, *, create: bool) -> OsFileHandle:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        return OsFileHandle(os.open(path, flags, 0o640), path)

    def read_bytes(self, path: Path) -> bytes:
        return path.read_bytes()

    def write_new(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            OsFileHandle(fd, path).pwrite(data, 0)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path) -> None:
        path.unlink()

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def mkdir(self, path: Path, mode: int = DIR_MODE) -> None:
        path.mkdir(mode=mode)

    def sync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def file_size(self, path: Path) -> int:
        return path.stat().st_size


def make_dirs(path: Path, fs: FileSystem | None = None, mode: int = DIR_MODE) -> None:
    """Create `path` (with `mode`) and each missing parent (with the umask's default, as
    `mkdir -p` does), each made durable by fsyncing its parent."""
    # A new directory's name lives in its parent: until the parent is fsynced, a power cut
    # may take the directory away with every file fsynced inside it (POSIX; ext4's journal
    # usually hides this, other file systems do not).
    fs = fs or OsFileSystem()
    missing: list[Path] = []
    level = Path(os.path.abspath(path))
    while not level.is_dir() and level.parent != level:
        if level.exists():  # a file in the way, as `mkdir -p` reports it
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        missing.append(level)
        level = level.parent
    for directory in reversed(missing):
        try:
            fs.mkdir(directory, mode if directory == missing[0] else PARENT_DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
        fs.sync_dir(directory.parent)
