"""The durability window in force, why, and what it costs the storage under the data dir.

`pilog run` logs it once at start, `pilog check` and `pilog status` show it (status takes
the running process's own, from its control socket), so an operator never has to work out
from three config sources and a default which loss window a box really has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilog.config import Config
from pilog.storage import UNKNOWN, Storage, storage_of

# Below this window, on flash, most syncs carry less than a 4 KiB block, which the card
# rewrites whole each time (docs/operations.md, "For an SD card").
FLASH_MIN_WINDOW_MS = 1000
WINDOW_KEY = "log.fsync_interval_ms"


@dataclass(frozen=True, slots=True)
class Durability:
    """What a power cut can lose: `window_ms` of readings (None: everything not written back)."""

    fsync: str
    window_ms: int | None
    why: str  # the setting and where it came from
    storage: Storage
    advice: str = ""  # a sentence when the setting wears the storage out or risks the data

    def summary(self) -> str:
        if self.window_ms is None:
            loss = "a power cut loses whatever the kernel has not written back (up to ~30 s)"
        elif self.window_ms == 0:
            loss = "a power cut loses nothing appended (every append is synced on its own)"
        else:
            loss = f"a power cut loses at most the last {_human_ms(self.window_ms)} of readings"
        return f"{loss}: {self.why}; data dir on {self.storage.describe()}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "fsync": self.fsync,
            "window_ms": self.window_ms,
            "why": self.why,
            "storage": self.storage.as_dict(),
            "advice": self.advice,
        }


def durability(config: Config, storage: Storage | None = None) -> Durability:
    """The window `config` gives its data dir (ephemeral mode included)."""
    if storage is None:
        storage = storage_of(Path(config.data_dir)) if config.mode != "ephemeral" else UNKNOWN
    fsync = config.log.fsync
    if config.mode == "ephemeral":
        return Durability(
            "never",
            None,
            f'mode = "ephemeral" ({_origin(config, "mode", "pilog run --ephemeral")}): '
            "the data dir is in RAM and a reboot loses what was not uploaded",
            storage,
        )
    if fsync == "never":
        return Durability(
            fsync,
            None,
            f'log.fsync = "never" ({_origin(config, "log.fsync")})',
            storage,
            'set log.fsync = "interval" to bound what a power cut loses',
        )
    if fsync == "always":
        advice = (
            f"every append costs at least one block on {storage.describe()}: log.fsync = "
            f'"interval" with fsync_interval_ms = {FLASH_MIN_WINDOW_MS} wears it far less'
            if storage.flash
            else ""
        )
        return Durability(
            fsync, 0, f'log.fsync = "always" ({_origin(config, "log.fsync")})', storage, advice
        )
    window = config.log.fsync_interval_ms
    advice = ""
    if storage.flash and window < FLASH_MIN_WINDOW_MS:
        advice = (
            f"below {FLASH_MIN_WINDOW_MS} ms most syncs rewrite a whole block of "
            f"{storage.describe()} for a few readings: raise {WINDOW_KEY} to "
            f"{FLASH_MIN_WINDOW_MS} or more (docs/operations.md, For an SD card)"
        )
    why = f"{WINDOW_KEY} = {window} ({_origin(config, WINDOW_KEY)})"
    return Durability(fsync, window, why, storage, advice)


def durability_dict(config: Config) -> dict[str, Any]:
    """`durability(config)` as `pilog status --json` shows it, with its summary."""
    window = durability(config)
    return window.as_dict() | {"summary": window.summary()}


def _origin(config: Config, key: str, otherwise: str = "the default") -> str:
    where = config.origins.get(key)
    if where is None:
        return otherwise
    if where.startswith("PILOG_"):
        return f"from ${where}"
    return f"from {where}"


def _human_ms(ms: int) -> str:
    return f"{ms / 1000:g} s" if ms >= 1000 and ms % 100 == 0 else f"{ms} ms"
