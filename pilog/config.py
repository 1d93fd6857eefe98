"""`pilog.toml`: loading, validation and the embedded default.

Every error names the file, the key path and what was expected. Unknown keys are errors: a
typo must never silently disable a setting. Environment variables override the file:
`PILOG_DEVICE_ID`, `PILOG_DATA_DIR`, `PILOG_MODE`, `PILOG_EPHEMERAL_DIR`, `PILOG_EPHEMERAL=1`
(= `mode = "ephemeral"`), and `PILOG_<SECTION>__<KEY>` for a key of a section
(`PILOG_LOG__FSYNC=always`).
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

import msgspec

from pilog.errors import ConfigError, ConfigProblemsError

CONFIG_SEARCH = (Path("pilog.toml"), Path("/etc/pilog/pilog.toml"))
ENV_PREFIX = "PILOG_"

EMBEDDED_DEFAULT = """\
# pilog's embedded default: a virtual sensor and this host's health, data in ./pilog-data.
data_dir = "./pilog-data"

[log]
segment_bytes = "16MiB"
max_bytes = "256MiB"

[[sensor]]
name = "demo"
driver = "synthetic"
interval_ms = 1000

[[sensor]]
name = "host"
driver = "system"          # CPU temperature, load, memory, disk use of the data dir
interval_ms = 10000

[[projection]]
type = "latest"            # `pilog show latest`

[[projection]]
type = "rollup"            # `pilog show rollup --sensor demo --field temperature_c`
windows = ["1m", "1h"]
"""


class Size(int):
    """A byte count: an integer or a string such as "16MiB", "512KiB", "1GB"."""


class Duration(float):
    """Seconds: a number, or a string such as "500ms", "30s", "5m", "2h", "7d"."""


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(value: object) -> Size:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Size(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "B").lower()
            return Size(int(float(m.group(1)) * _SIZE_UNITS[unit]))
    raise ValueError(f"expected a size such as 16MiB or 1GiB, got {value!r}")


def parse_duration(value: object) -> Duration:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return Duration(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return Duration(float(m.group(1)) * _DURATION_UNITS[m.group(2)])
    raise ValueError(f"expected a duration such as 500ms, 30s, 5m, 2h or 7d, got {value!r}")


def _dec_hook(typ: type, obj: object) -> object:
    if typ is Size:
        return parse_size(obj)
    if typ is Duration:
        return parse_duration(obj)
    if typ is Path:
        if isinstance(obj, Path):  # from Python callers (tests, plugins' own configs)
            return obj
        if isinstance(obj, str) and obj:
            return Path(obj)
        raise ValueError(f"expected a path, got {obj!r}")
    raise TypeError(f"no decoder for {typ}")


decode_hook = _dec_hook  # for plugins' Options: Size, Duration and Path keys decode as here


class LogConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    fsync: Literal["always", "interval", "never"] = "interval"  # when appends reach the disk
    fsync_interval_ms: int = 1000  # "interval": the most a power cut can lose
    segment_bytes: Size = Size(16 << 20)  # a segment is sealed at this size
    segment_max_age: Duration | None = None  # ... or after this long (none: size only)
    max_bytes: Size = Size(1 << 30)  # the log never grows past this (+ one segment)
    on_full: Literal["drop_oldest", "block"] = "drop_oldest"  # every drop is a gap event
    retain: Duration = Duration(7 * 86400)  # keep consumed segments this long for replay
    preallocate: bool = True  # fallocate segments: fewer device writes per fdatasync

    def __post_init__(self) -> None:
        if self.fsync_interval_ms < 1:
            raise ValueError("fsync_interval_ms must be at least 1")
        if self.segment_bytes < 4096:
            raise ValueError("segment_bytes must be at least 4KiB")
        if self.max_bytes < 2 * self.segment_bytes:
            raise ValueError("max_bytes must hold at least two segments (2 x segment_bytes)")


class SensorConfig(msgspec.Struct, frozen=True):
    """A `[[sensor]]` table; keys other than these are the driver's own options."""

    name: str  # unique; becomes the readings' `sensor`
    driver: str  # a built-in name (`pilog drivers`), "package.module:Class" or an entry point
    interval_ms: int = 5000  # polling period; 0 = as fast as the log takes readings
    timeout_ms: int | None = None  # a poll taking longer is a failure (default: a few intervals)
    options: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("sensor name must not be empty")
        if self.interval_ms < 0:
            raise ValueError("interval_ms must be 0 (as fast as possible) or more")


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`[metrics]`: Prometheus text format on `http://{listen}/metrics`; absent = off."""

    listen: str | None = None  # HOST:PORT such as "127.0.0.1:9108"; absent: off

    def __post_init__(self) -> None:
        if self.listen is not None:
            host, _, port = self.listen.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"listen: expected HOST:PORT such as 127.0.0.1:9108, got {self.listen!r}"
                )

    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ProjectionsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`[projections]`: the lmdb map every `[[projection]]` shares (address space, not disk)."""

    map_size: Size | None = None  # map to start with; default 1GiB, 512MiB on 32-bit systems
    map_size_max: Size | None = None  # a full map doubles up to this; default 1TiB, 1GiB on 32-bit

    def __post_init__(self) -> None:
        for key, size in (("map_size", self.map_size), ("map_size_max", self.map_size_max)):
            if size is not None and size < 64 << 10:
                raise ValueError(f"{key} must be at least 64KiB")
        if self.map_size and self.map_size_max and self.map_size_max < self.map_size:
            raise ValueError("map_size_max must be at least map_size")


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    device_id: str = msgspec.field(default_factory=socket.gethostname)  # in every event id
    data_dir: Path = Path("/var/lib/pilog")  # log, index, projections; one pilog run each
    mode: Literal["normal", "ephemeral"] = "normal"  # ephemeral: all state in RAM (tmpfs)
    ephemeral_dir: Path | None = None  # default: $RUNTIME_DIRECTORY, /run/pilog, /dev/shm/pilog
    driver_paths: list[Path] = msgspec.field(  # dirs of module:Class drivers, relative to this file
        default_factory=list
    )
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    sensor: list[SensorConfig] = msgspec.field(default_factory=list)
    sink: list[SinkConfig] = msgspec.field(default_factory=list)
    projection: list[ProjectionConfig] = msgspec.field(default_factory=list)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    projections: ProjectionsConfig = msgspec.field(default_factory=ProjectionsConfig)
    source: str = "<embedded default>"  # where the config came from; not a key of the file
    # Where each [log] key and `mode` that is not a default came from: the file, or the
    # environment variable that overrode it (for "which durability window and why").
    origins: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [s.name for s in self.sensor]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sensor names must be unique; repeated: {', '.join(dupes)}")
        for what, names in (
            ("sink", [s.name for s in self.sink]),
            ("projection", [projection_name(p) for p in self.projection]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(dupes)}")
        if not self.device_id or len(self.device_id.encode()) > 255:
            raise ValueError("device_id must be 1 to 255 bytes")


class SinkConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A `[[sink]]` table; keys other than these are the sink type's own options."""

    name: str  # unique; letters, digits, '_', '.', '-'
    type: str  # a built-in name (`pilog sinks`), "package.module:Class" or an entry point
    batch_max: int = 1000  # readings per request
    batch_max_bytes: Size = Size(1 << 20)  # encoded body, before gzip
    linger_ms: int = 1000  # wait this long for a batch to fill (fewer requests, cursor moves)
    retry_initial_ms: int = 500  # first backoff; doubles per failure, with full jitter
    retry_max: Duration = Duration(300)  # backoff cap, and the pause after 401/403
    timeout: Duration = Duration(30)  # of one request (or one batch of MQTT acks)
    cursor_commit_interval: Duration = Duration(0)  # 0: save after each ack; see operations
    options: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError("sink name must be letters, digits, '_', '.' or '-'")
        if self.batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        if self.linger_ms < 0 or self.retry_initial_ms < 1:
            raise ValueError("linger_ms must be >= 0 and retry_initial_ms >= 1")


class ProjectionConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A `[[projection]]` table; keys other than these are the projection type's own options."""

    type: str  # a built-in name (`pilog projections`), "package.module:Class" or an entry point
    name: str = ""  # default: the type
    commit_interval: Duration = Duration(60)  # state and cursor commit together, this often
    options: dict[str, Any] = msgspec.field(default_factory=dict)


def projection_name(p: ProjectionConfig) -> str:
    return p.name or p.type


_SENSOR_KEYS = frozenset({"name", "driver", "interval_ms", "timeout_ms"})
# The keys of a plugin table that are not the plugin's options, by table.
_COMMON_KEYS = {
    "sensor": _SENSOR_KEYS,
    "sink": frozenset(f.encode_name for f in msgspec.structs.fields(SinkConfig)) - {"options"},
    "projection": frozenset(f.encode_name for f in msgspec.structs.fields(ProjectionConfig))
    - {"options"},
}


def find_config(explicit: Path | None) -> Path | None:
    """The config to use: `-c`, then $PILOG_CONFIG, ./pilog.toml, /etc/pilog/pilog.toml."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    env = os.environ.get("PILOG_CONFIG")
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"config file {env} (from $PILOG_CONFIG) does not exist")
        return Path(env)
    for candidate in CONFIG_SEARCH:
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None, environ: dict[str, str] | None = None) -> Config:
    """Load `path` (None: the embedded default), apply env overrides, validate."""
    environ = dict(os.environ) if environ is None else environ
    if path is None:
        source, text = "<embedded default>", EMBEDDED_DEFAULT
    else:
        source = os.path.normpath(path.absolute())  # errors name the file wherever it ran
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from e
    return parse_config(raw, source, environ)


def parse_config(raw: dict[str, Any], source: str, environ: dict[str, str]) -> Config:
    raw = dict(raw)
    origins = {key: source for key in _tracked_keys(raw)}
    origins |= _apply_env(raw, environ)
    for key in ("sensor", "sink", "projection"):
        tables = raw.get(key, [])
        if isinstance(tables, list):
            raw[key] = [_split_plugin_table(t, _COMMON_KEYS[key]) for t in tables]
    problems = _problems(raw, source)
    if problems:
        problems += _driver_problems(raw, source)
        raise ConfigProblemsError([f"{source}: {p}" for p in problems])
    raw["source"] = source
    raw["origins"] = origins
    try:
        # Each table is valid now; what is left are the checks across tables (unique names).
        return msgspec.convert(raw, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {_humanize(str(e))}") from e


def _problems(raw: dict[str, Any], source: str) -> list[str]:
    """Every problem of the raw config, table by table: msgspec stops at a table's first."""
    fields = {f.encode_name: f.type for f in msgspec.structs.fields(Config)}
    for internal in ("source", "origins"):
        del fields[internal]
    problems = [f"unknown key `{k}`{did_you_mean(k, fields)}" for k in raw if k not in fields]
    for key, typ in fields.items():
        if key not in raw:
            continue
        value = raw[key]
        if key in ("sink", "projection") and isinstance(value, list):
            search = _raw_search_dirs(raw, source)
            for i, table in enumerate(value):
                problems += _plugin_table_problems(key, table, f"{key}[{i}]", search)
        elif key == "sensor" and isinstance(value, list):
            for i, table in enumerate(value):
                problems += table_problems(table, SensorConfig, f"{key}[{i}]")
        else:
            problems += table_problems(value, typ, key)
    return problems


def _plugin_table_problems(key: str, table: object, path: str, search: list[Path]) -> list[str]:
    """The problems of one split `[[sink]]` or `[[projection]]` table, its options included.

    A sink's or projection's options are checked when the config is loaded, whatever the
    command: a typo in them must stop `pilog check` as it stops `pilog run`.
    """
    typ = SinkConfig if key == "sink" else ProjectionConfig
    if not isinstance(table, dict) or not isinstance(table.get("type"), str):
        return table_problems(table, typ, path)
    from pilog import plugins  # noqa: PLC0415  (pilog.plugins imports this module)

    try:
        cls = plugins.find_plugin(plugin_kind(key), table["type"], search)
        options_of = plugins.options_of(cls)
    except ConfigError as e:
        return [f"{path}.type: {e}", *table_problems(table, typ, path)]
    options = table.get("options", {})
    common = sorted(_COMMON_KEYS[key])
    unknown = unknown_keys(options, options_of, also_known=common)
    problems = [f"{path}: unknown key `{k}`{hint}" for k, hint in unknown.items()]
    problems += table_problems(table, typ, path)
    known_options = {k: v for k, v in options.items() if k not in unknown}
    return problems + table_problems(known_options, options_of, path)


def plugin_kind(key: str) -> Any:
    """The PluginKind of a config table (`sensor`, `sink`, `projection`)."""
    if key == "sink":
        from pilog.uploader.sinks import KIND  # noqa: PLC0415

        return KIND
    if key == "projection":
        from pilog.projections import KIND as PROJECTION_KIND  # noqa: PLC0415

        return PROJECTION_KIND
    from pilog.drivers import KIND as DRIVER_KIND  # noqa: PLC0415

    return DRIVER_KIND


def _raw_search_dirs(raw: dict[str, Any], source: str) -> list[Path]:
    try:
        paths = msgspec.convert(raw.get("driver_paths", []), list[Path], dec_hook=_dec_hook)
    except msgspec.ValidationError:
        paths = []
    return _search_dirs(source, paths)


def _driver_problems(raw: dict[str, Any], source: str) -> list[str]:
    """The driver problems of each valid [[sensor]] table, so that one refusal names them too.

    Only when the config is refused anyway: a valid config's drivers load in `load_drivers`,
    by commands that run them.
    """
    from pilog.drivers import load_sensor  # noqa: PLC0415  (pilog.drivers imports config)

    search = _raw_search_dirs(raw, source)
    problems = []
    for i, table in enumerate(raw.get("sensor") or []):
        try:
            sensor = msgspec.convert(table, SensorConfig, dec_hook=_dec_hook)
            load_sensor(sensor, i, source, search)
        except msgspec.ValidationError:
            continue  # already named by _problems
        except ConfigProblemsError as e:
            problems += [p.removeprefix(f"{source}: ") for p in e.problems]
    return problems


def table_problems(
    value: object, typ: Any, path: str, also_known: typing.Iterable[str] = ()
) -> list[str]:
    """Each unknown key of one table (with a suggestion), then its first bad value.

    `also_known`: keys the table takes besides `typ`'s (the common keys of a plugin table),
    so that a misspelt one is suggested too.
    """
    unknown = unknown_keys(value, typ, also_known)
    problems = [f"{path}: unknown key `{k}`{hint}" for k, hint in unknown.items()]
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in unknown}
    try:
        msgspec.convert(value, typ, dec_hook=_dec_hook)
    except msgspec.ValidationError as e:
        message, _, at = str(e).partition(" - at `$")
        at = at.rstrip("`")
        choices = _literal_choices(at.lstrip("."), typ) if at else ()
        problems.append(_humanize(f"{message} - at `$.{path}{at}`", choices))
    return problems


def unknown_keys(value: object, typ: Any, also_known: typing.Iterable[str] = ()) -> dict[str, str]:
    """Each key of table `value` that `typ` refuses, with a suggestion ("" when none is close)."""
    known = _known_keys(value, typ)
    if known is None or not isinstance(value, dict):
        return {}
    choices = [*known, *also_known]
    return {k: did_you_mean(k, choices) for k in value if k not in known}


def _known_keys(value: object, typ: Any) -> list[str] | None:
    """The keys a table of `typ` takes when it refuses others (tagged unions by their tag)."""
    members = typing.get_args(typ) or (typ,)
    structs = [t for t in members if isinstance(t, type) and issubclass(t, msgspec.Struct)]
    for struct in structs:
        config = struct.__struct_config__
        tag = config.tag_field
        if tag is not None and (not isinstance(value, dict) or value.get(tag) != config.tag):
            continue
        if not config.forbid_unknown_fields:
            return None
        names = [f.encode_name for f in msgspec.structs.fields(struct)]
        return names + ([tag] if tag is not None else [])
    return None


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """`; did you mean `X`?` for the closest of `choices`, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def sink_from_table(table: dict[str, Any]) -> SinkConfig:
    """A SinkConfig from a `[[sink]]` table as a file writes it (its options among the common
    keys); msgspec.ValidationError when a common key is bad. Options are checked on open."""
    split = _split_plugin_table(table, _COMMON_KEYS["sink"])
    return msgspec.convert(split, SinkConfig, dec_hook=_dec_hook)


def _split_plugin_table(table: object, common_keys: frozenset[str]) -> object:
    """A plugin table's common keys, and every other key under `options`."""
    if not isinstance(table, dict):
        return table
    common = {k: v for k, v in table.items() if k in common_keys}
    common["options"] = {k: v for k, v in table.items() if k not in common_keys}
    return common


def _env_value(text: str) -> object:
    """An environment value read as a TOML value (50, true, "16MiB"), else as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _tracked_keys(raw: dict[str, Any]) -> list[str]:
    log_table = raw.get("log")
    keys = [f"log.{k}" for k in log_table] if isinstance(log_table, dict) else []
    return keys + (["mode"] if "mode" in raw else [])


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    """Overlay PILOG_* variables on the raw table; return the tracked keys they set."""
    origins: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ("PILOG_CONFIG",):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if "__" in key:
            section, sub = key.split("__", 1)
            if section not in ("log", "metrics", "projections"):
                # A misspelt section must not silently disable the setting it meant.
                raise ConfigError(
                    f"environment variable {name}: no section [{section}] takes overrides; "
                    "known: PILOG_LOG__<KEY>, PILOG_METRICS__<KEY>, PILOG_PROJECTIONS__<KEY>"
                )
            table = raw[section] = dict(raw.get(section, {}))
            if isinstance(table, dict):
                table[sub] = _env_value(value)
                origins[f"{section}.{sub}"] = name
        elif key in ("device_id", "data_dir", "mode", "ephemeral_dir"):
            raw[key] = value
            origins[key] = name
        elif key == "ephemeral" and value.strip().lower() in ("1", "true", "yes", "on"):
            raw["mode"] = "ephemeral"
            origins["mode"] = name
    return {k: v for k, v in origins.items() if k.startswith("log.") or k == "mode"}


def _humanize(message: str, choices: tuple[object, ...] | None = None) -> str:
    """msgspec's "... - at `$.log.fsync`" as "log.fsync: ..."; `choices`: of a Literal there
    (None: looked up from the path)."""
    m = re.match(r"^(.*) - at `\$\.?(.*)`$", message)
    if not m:
        return message
    what, path = m.groups()
    if choices is None:
        choices = _literal_choices(path)
    if choices and what.startswith("Invalid enum value"):
        what += f"; expected one of {', '.join(repr(c) for c in choices)}"
    path = re.sub(r"\.options(?=\.|$)", "", path) or "(top level)"
    return f"{path}: {what}"


def _literal_choices(path: str, root: object = Config) -> tuple[object, ...]:
    """The allowed values of a Literal-typed key such as `log.fsync` (of `root`), else ()."""
    typ: object = root
    for part in re.sub(r"\[\d+\]", "", path).split("."):
        if not (isinstance(typ, type) and issubclass(typ, msgspec.Struct)):
            return ()
        typ = typing.get_type_hints(typ).get(part)
    return typing.get_args(typ) if typing.get_origin(typ) is Literal else ()


def driver_dirs(config: Config) -> list[Path]:
    """Where "module:Class" drivers are looked for: `driver_paths`, then the config's directory."""
    return _search_dirs(config.source, config.driver_paths)


def _search_dirs(source: str, driver_paths: list[Path]) -> list[Path]:
    if source.startswith("<"):
        return list(driver_paths)  # the embedded default: relative to the working directory
    base = Path(source).parent
    return [base / p for p in driver_paths] + [base]


def log_options(config: Config) -> dict[str, Any]:
    """Keyword arguments of pilog.log.writer.LogOptions for this config."""
    c = config.log
    return {
        "device_id": config.device_id,
        "fsync": c.fsync,
        "fsync_interval_s": c.fsync_interval_ms / 1000,
        "segment_bytes": int(c.segment_bytes),
        "segment_max_age_s": c.segment_max_age,
        "max_bytes": int(c.max_bytes),
        "on_full": c.on_full,
        "retain_s": float(c.retain),
        "preallocate": c.preallocate,
    }
