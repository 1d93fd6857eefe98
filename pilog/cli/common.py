"""What every command shares: finding the config and the data dir, printing errors."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import msgspec

from pilog.config import Config, find_config, load_config

CONFIG_HELP = "Config file (default: $PILOG_CONFIG, ./pilog.toml, /etc/pilog/pilog.toml, embedded)"
DATA_DIR_HELP = "Data dir to use instead of the config's data_dir"


def resolve_config(
    config: Path | None, data_dir: Path | None, *, ephemeral: bool = False
) -> Config:
    """The config a command runs with: `--data-dir` applied, and ephemeral mode's data dir
    and bounds when the config, $PILOG_EPHEMERAL or `--ephemeral` asks for it."""
    cfg = load_config(find_config(config))
    if ephemeral or cfg.mode == "ephemeral":
        if data_dir is not None:
            cfg = msgspec.structs.replace(cfg, ephemeral_dir=data_dir)
        from pilog.ephemeral import ephemeral as in_ram  # noqa: PLC0415

        return in_ram(cfg)
    if data_dir is not None:
        cfg = msgspec.structs.replace(cfg, data_dir=data_dir)
    return cfg


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # httpx logs every request at INFO: a line per upload into the journal, on the SD
        # card. The uploader reports failures and state changes itself.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_age(seconds: float) -> str:
    """4.2s, 3m10s, 5h02m, 3d04h."""
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"
