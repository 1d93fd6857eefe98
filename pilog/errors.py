"""Every error pilog raises on purpose.

    PilogError
    ├── ConfigError            a config file or override is invalid (names file and key path)
    │   └── ConfigProblemsError every problem of one config at once, one line each
    ├── DataDirError           the data dir cannot be used (not writable, missing)
    │   ├── LockedError        another pilog process owns the data dir
    │   └── NoDataDirError     a reading command found no data dir that pilog run wrote
    └── LogError               the segmented log
        ├── CorruptionError    a frame or header fails its checks (segment, offset, reason)
        ├── FormatVersionError a segment was written by an unknown format version
        ├── LogFullError       an append was refused: the log is full or I/O is stalled
        ├── RecordTooLargeError an append was refused: its payload is over the frame limit
        └── LogIOError         the disk failed under the writer (ENOSPC, EIO)

A CLI command turns any PilogError into one sentence on stderr and a non-zero exit.
"""

from __future__ import annotations


class PilogError(Exception):
    """Base of every error pilog raises on purpose."""


class ConfigError(PilogError):
    """A config file, key or override is invalid."""


class ConfigProblemsError(ConfigError):
    """Every problem found in one config, each naming file and key path, reported together."""

    def __init__(self, problems: list[str]) -> None:
        head = [] if len(problems) == 1 else [f"{len(problems)} problems in the config:"]
        super().__init__("\n".join(head + problems))
        self.problems = problems


class DataDirError(PilogError):
    """The data dir cannot be used."""


class LockedError(DataDirError):
    """Another process holds the data dir's writer lock."""

    def __init__(self, path: str, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"data dir {path} is in use by {who} (lock held on {path}/LOCK)")
        self.path = path
        self.pid = pid


class NoDataDirError(DataDirError):
    """Nothing at the place, or nothing `pilog run` makes: `pilog tail -f` waits for it."""

    def __init__(self, absent: str, fix: str) -> None:
        super().__init__(f"{absent}; {fix}")
        self.absent = absent  # the sentence without the fix


class LogError(PilogError):
    """Base of errors from the segmented log."""


class CorruptionError(LogError):
    """A record or header failed its checks at a known place."""

    def __init__(self, segment: str, offset: int, reason: str) -> None:
        super().__init__(f"corrupt log: {segment} at offset {offset}: {reason}")
        self.segment = segment
        self.offset = offset
        self.reason = reason


class FormatVersionError(LogError):
    """A segment header names a format version this pilog cannot read."""

    def __init__(self, segment: str, version: int, supported: int) -> None:
        super().__init__(
            f"{segment} uses log format version {version}; this pilog reads version "
            f"{supported} only (upgrade pilog to read it)"
        )
        self.segment = segment
        self.version = version


class LogFullError(LogError):
    """An append was refused; the reading is dropped at the source and counted."""


class RecordTooLargeError(LogError):
    """A payload over the frame limit of docs/log-format.md; refused before it is written."""

    def __init__(self, size: int, limit: int, index: int | None = None) -> None:
        super().__init__(
            f"record of {size} bytes is over the log's frame limit of {limit} bytes "
            "(docs/log-format.md); make the reading smaller or split it into several"
        )
        self.size = size
        self.limit = limit
        self.index = index  # of the refused payload among those appended together


class LogIOError(LogError):
    """The filesystem failed under the writer."""

    def __init__(self, op: str, path: str, err: OSError) -> None:
        super().__init__(f"{op} failed on {path}: {err.strerror or err}")
        self.op = op
        self.path = path
        self.errno = err.errno


MQTT_EXTRA_FIX = (
    "pip install 'paho-mqtt>=2.0' into pilog's environment, or reinstall pilog's wheel with "
    "[mqtt] (docs/install.md, Extras)"
)


def mqtt_extra_missing(what: str) -> str:
    """The error for an mqtt sink or driver without paho-mqtt (the `mqtt` extra)."""
    return (
        f'{what} needs paho-mqtt (pilog\'s "mqtt" extra), which is not installed: {MQTT_EXTRA_FIX}'
    )
