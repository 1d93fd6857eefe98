"""What every command shares: finding the config and the data dir, printing errors."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from pilog.config import CONFIG_SEARCH, Config, find_config, load_config
from pilog.datadir import DataDirPaths
from pilog.errors import DataDirError, NoDataDirError

CONFIG_HELP = "Config file (default: $PILOG_CONFIG, ./pilog.toml, /etc/pilog/pilog.toml, embedded)"
DATA_DIR_HELP = "Data dir to use instead of the config's data_dir"


def resolve_config(
    config: Path | None, data_dir: Path | None, *, ephemeral: bool = False
) -> Config:
    """The config a command runs with: `--data-dir` applied, and ephemeral mode's data dir
    and bounds when the config, $PILOG_EPHEMERAL or `--ephemeral` asks for it."""
    return _resolve(load_config(find_config(config)), data_dir, ephemeral=ephemeral)


def reading_config(config: Path | None, data_dir: Path | None, *, wait: bool = False) -> Config:
    """The config of a command that reads an existing data dir (status, tail, verify, show,
    export, replay, repair): its data dir absolute, and checked to be a pilog data dir.

    Raises DataDirError naming the absolute path and where it came from; with `wait`
    (`tail -f`), a data dir that pilog has yet to make is said on stderr instead. When no
    config file was found, says on stderr which data dir the embedded default means.
    """
    found = find_config(config)
    cfg = _resolve(load_config(found), data_dir, ephemeral=False)
    root = Path(os.path.abspath(cfg.data_dir))
    origin = data_dir_origin(cfg, found, data_dir)
    try:
        check_data_dir(root, origin)
    except NoDataDirError as e:
        if not wait:
            raise
        print(f"pilog: {e.absent}; waiting for `pilog run` to write it", file=sys.stderr)
    else:
        if origin.embedded:
            print(
                f"pilog: no config file found ({looked_for()}): using the embedded default, "
                f"data dir {root}",
                file=sys.stderr,
            )
    return msgspec.structs.replace(cfg, data_dir=root)


@dataclass(frozen=True, slots=True)
class DataDirOrigin:
    """Where a command's data dir came from, and how to point it elsewhere."""

    text: str  # "given by --data-dir", "data_dir in /etc/pilog/pilog.toml", ...
    fix: str  # one clause saying what to change
    embedded: bool = False  # the embedded default's own ./pilog-data


def looked_for() -> str:
    """Where a config file was looked for, as absolute paths."""
    places = ", ".join(os.path.abspath(p) for p in CONFIG_SEARCH)
    return f"looked for $PILOG_CONFIG, {places}"


def data_dir_origin(cfg: Config, found: Path | None, data_dir: Path | None) -> DataDirOrigin:
    """Where `cfg.data_dir` came from: --data-dir, the environment, a file or the default."""
    use_elsewhere = "pass -c with the config `pilog run` uses, or --data-dir with its data dir"
    if data_dir is not None:
        return DataDirOrigin(
            "given by --data-dir", "give --data-dir the data dir `pilog run` writes to"
        )
    key, env = (
        ("ephemeral_dir", "PILOG_EPHEMERAL_DIR")
        if cfg.mode == "ephemeral"
        else ("data_dir", "PILOG_DATA_DIR")
    )
    if os.environ.get(env):
        return DataDirOrigin(f"given by ${env}", f"set ${env} to {key} of `pilog run`, or unset it")
    if found is None:
        if cfg.mode == "ephemeral":
            return DataDirOrigin("ephemeral mode's default dir", use_elsewhere)
        return DataDirOrigin(
            f"the embedded default, as no config file was found: {looked_for()}",
            use_elsewhere,
            embedded=True,
        )
    where = os.path.abspath(found)
    if _sets_key(found, key):
        return DataDirOrigin(f"{key} in the config file {where}", use_elsewhere)
    if cfg.mode == "ephemeral":
        return DataDirOrigin(f"ephemeral mode's default dir, as {where} sets none", use_elsewhere)
    return DataDirOrigin(
        f"the default data_dir, as the config file {where} sets none", use_elsewhere
    )


def _sets_key(path: Path, key: str) -> bool:
    try:
        return key in tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False  # load_config read it a moment ago: a race not worth a second error


def check_data_dir(root: Path, origin: DataDirOrigin) -> None:
    """Raise DataDirError unless `root` is a directory that `pilog run` has written."""
    where = f"data dir {root} ({origin.text})"
    try:
        if not stat.S_ISDIR(root.stat().st_mode):
            raise DataDirError(f"{where} is not a directory; {origin.fix}")
        if DataDirPaths(root).is_data_dir():
            return
    except (FileNotFoundError, NotADirectoryError):
        raise NoDataDirError(f"{where} does not exist", origin.fix) from None
    except PermissionError:
        raise DataDirError(_not_readable(root, where)) from None
    raise NoDataDirError(
        f"{where} is not a pilog data dir: it holds no LOCK, log/ or index.sqlite", origin.fix
    )


def _not_readable(root: Path, where: str) -> str:
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid {uid}"
    try:
        gid = root.stat().st_gid
        group = grp.getgrgid(gid).gr_name
    except PermissionError:
        group = "GROUP"  # the parent is closed too: its owner must say which group
    except KeyError:
        group = str(gid)
    return (
        f"{where} is not readable by user {user}: permission denied; add the user to the "
        f"group that owns it (`usermod -aG {group} {user}`, then log in again) or run as its owner"
    )


def _resolve(cfg: Config, data_dir: Path | None, *, ephemeral: bool) -> Config:
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
