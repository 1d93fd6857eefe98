"""systemd's notify protocol (sd_notify), without a dependency: READY, WATCHDOG, STOPPING.

Active only when systemd set NOTIFY_SOCKET (a unit with Type=notify); otherwise every call is
a no-op. Watchdog pings come from the event loop itself, so a wedged loop stops them and
systemd restarts the service (WatchdogSec).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("pilog.systemd")


class Notifier:
    """Sends state lines to the socket named by $NOTIFY_SOCKET."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # An address starting with "@" is in the abstract namespace (a leading NUL byte).
        self._address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and mine else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, state: str) -> None:
        """Send `state` (e.g. "READY=1"); failures are logged, never raised."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(state.encode(), self._address)
        except OSError as e:
            log.warning("sd_notify %s failed: %s", state.split("=", maxsplit=1)[0], e)
