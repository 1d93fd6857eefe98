"""A pseudo-terminal standing in for a serial device, for tests of serial drivers.

The driver opens `path` as it would /dev/ttyUSB0; the test writes what the device would send
to the other end. `link` gives the device a stable name (as /dev/serial/by-id/... does), so
`unplug()` and `replug()` can make it vanish and come back as a new tty behind the same name.
"""

from __future__ import annotations

import os
import select
import tty
from pathlib import Path
from types import TracebackType


class SerialPty:
    """One end a driver opens (`path`), one end the test drives (`write`, `read`)."""

    def __init__(self, link: Path | None = None) -> None:
        self.link = link
        self._master = -1
        self._slave = -1
        self.tty = ""
        self.replug()

    @property
    def path(self) -> str:
        """What the driver should open: the stable link if there is one, else the tty."""
        return str(self.link) if self.link is not None else self.tty

    def write(self, data: bytes) -> None:
        """Send `data` to the driver, as the device would."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._master, view) :]

    def read(self, size: int = 4096, timeout_s: float = 1.0) -> bytes:
        """What the driver sent to the device, waiting up to `timeout_s` for the first byte."""
        ready, _, _ = select.select([self._master], [], [], timeout_s)
        return os.read(self._master, size) if ready else b""

    def unplug(self) -> None:
        """The device vanishes: its tty hangs up and its name disappears."""
        if self.link is not None:
            self.link.unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def replug(self) -> None:
        """The device comes back (as a new tty, behind the same link)."""
        self.unplug()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: bytes pass as a UART passes them
        self.tty = os.ttyname(self._slave)
        if self.link is not None:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            self.link.symlink_to(self.tty)

    def close(self) -> None:
        self.unplug()

    def __enter__(self) -> SerialPty:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
