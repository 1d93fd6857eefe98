"""Ephemeral mode: the whole data dir in RAM, for boxes with a read-only (overlay) root.

The box is a gateway: readings are kept until uploaded and need not survive a reboot. All
state goes under one tmpfs directory (`ephemeral_dir`, else `$RUNTIME_DIRECTORY` as systemd's
`RuntimeDirectory=pilog` sets it, else `/run/pilog`, else `/dev/shm/pilog`), nothing is
written anywhere else, `fdatasync` is skipped (it means nothing on tmpfs) and the log is
capped at a quarter of that filesystem so it cannot eat the RAM.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from pilog.config import Config, Size
from pilog.errors import DataDirError
from pilog.mounts import existing_ancestor

log = logging.getLogger("pilog")

RAM_SHARE = 4  # the log may take up to 1/RAM_SHARE of the tmpfs it lives on
MIN_SEGMENT_BYTES = 64 << 10
SEGMENTS_PER_LOG = 8  # small segments: retention frees RAM in small steps


def default_dir(environ: Mapping[str, str]) -> Path:
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime)
    run = Path("/run/pilog")
    if run.is_dir() or os.access("/run", os.W_OK):  # a reader in group pilog finds it too
        return run
    # World-writable /dev/shm: `ephemeral` refuses the dir unless it is ours.
    return Path("/dev/shm/pilog")  # noqa: S108


def ephemeral(config: Config, environ: Mapping[str, str] | None = None) -> Config:
    """`config` as ephemeral mode runs it: data dir in RAM, no fsync, RAM-sized bounds."""
    environ = os.environ if environ is None else environ
    root = config.ephemeral_dir or default_dir(environ)
    max_bytes = int(config.log.max_bytes)
    try:
        st = os.statvfs(existing_ancestor(root))
        max_bytes = min(max_bytes, st.f_blocks * st.f_frsize // RAM_SHARE)
    except OSError:
        pass  # created later by the data dir; keep the configured cap
    segment = min(
        int(config.log.segment_bytes), max(MIN_SEGMENT_BYTES, max_bytes // SEGMENTS_PER_LOG)
    )
    max_bytes = max(max_bytes, 2 * segment)
    log_config = msgspec.structs.replace(
        config.log,
        fsync="never",
        preallocate=False,  # preallocated space on tmpfs is RAM taken for nothing
        max_bytes=Size(max_bytes),
        segment_bytes=Size(segment),
    )
    return msgspec.structs.replace(config, mode="ephemeral", data_dir=root, log=log_config)


def check_owner(config: Config) -> None:
    """For the writer: refuse an ephemeral dir someone else made (/dev/shm is world-writable)."""
    root = Path(config.data_dir)
    try:
        owner = root.lstat().st_uid
    except FileNotFoundError:
        return
    if owner != os.geteuid() or root.is_symlink():
        raise DataDirError(
            f"ephemeral dir {root} belongs to another user (uid {owner}) or is a symlink; "
            "set ephemeral_dir or $RUNTIME_DIRECTORY"
        )
