"""`docs/config.md`, generated from the config types in `pilog/config.py`.

Every key's type and default come from the structs; its one-line description is the comment
after the field in the source. `tools/gen_config_reference.py` writes the page and a test
fails when the page differs from what this module renders, so the reference cannot go stale.
"""

from __future__ import annotations

import inspect
import io
import tokenize
import typing
from pathlib import Path
from typing import Any, Literal

import msgspec

from pilog import config as c

HEADER = """\
# Configuration reference

Generated from `pilog/config.py` by `tools/gen_config_reference.py`; do not edit by hand.

pilog reads `-c FILE`, else `$PILOG_CONFIG`, else `./pilog.toml`, else `/etc/pilog/pilog.toml`,
else its embedded default (virtual sensors, data in `./pilog-data`). Unknown keys are errors,
with the closest known key suggested; every problem of a file is reported at once.
Sizes are bytes or strings such as `"16MiB"`, `"512KiB"`, `"1GB"`; durations are seconds or
strings such as `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"`.

Environment variables override the file: `PILOG_DEVICE_ID`, `PILOG_DATA_DIR`, `PILOG_MODE`,
`PILOG_EPHEMERAL_DIR`, `PILOG_EPHEMERAL=1`, and `PILOG_<SECTION>__<KEY>` for `[log]`,
`[metrics]` and `[projections]` (`PILOG_LOG__FSYNC=always`). Secrets:
`PILOG_SINK_<NAME>_TOKEN` and `PILOG_SINK_<NAME>_PASSWORD` when no `token_file` /
`password_file` is set.
"""

_NESTED = {
    "log",
    "sensor",
    "sink",
    "projection",
    "metrics",
    "projections",
    "options",
    "source",
    "origins",
}


def field_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each field line in `cls`'s source, by field name."""
    out: dict[str, str] = {}
    source = inspect.getsource(cls)
    pending: str | None = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and pending is None:
            pending = tok.string
        elif tok.type == tokenize.COMMENT and pending is not None and tok.start[1] > 4:
            out.setdefault(pending, tok.string.lstrip("# ").strip())
        if tok.type == tokenize.NEWLINE:
            pending = None
    return out


def _type_name(t: Any) -> str:
    if t is c.Size:
        return "size"
    if t is c.Duration:
        return "duration"
    if t is Path:
        return "path"
    origin = typing.get_origin(t)
    if origin is Literal:
        return " \\| ".join(f"`{v!r}`".replace("'", '"') for v in typing.get_args(t))
    if origin is list:
        return f"list of {_type_name(typing.get_args(t)[0])}"
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if args and len(args) < len(typing.get_args(t)):
        return _type_name(args[0]) + " (optional)"
    return getattr(t, "__name__", str(t))


def _default(field: msgspec.inspect.Field) -> str:
    value = field.default
    if value is msgspec.NODEFAULT:
        if field.default_factory is not msgspec.NODEFAULT:
            value = field.default_factory()
        else:
            return "required"
    if value is None:
        return "none"
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, c.Size):
        return f'"{_size(int(value))}"'
    if isinstance(value, c.Duration):
        return f'"{_duration(float(value))}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str | Path):
        return f'"{value}"'
    return repr(value)


def _size(n: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k}{unit}"
    return str(n)


def _duration(s: float) -> str:
    for unit, k in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= k and s % k == 0:
            return f"{int(s // k)}{unit}"
    return f"{s * 1000:g}ms"


def _table(cls: type, skip: set[str] = frozenset(), note: dict[str, str] | None = None) -> str:  # type: ignore[assignment]
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for base in cls.__mro__[1:]:
        if (
            isinstance(base, type)
            and issubclass(base, msgspec.Struct)
            and base is not msgspec.Struct
        ):
            comments = {**field_comments(base), **comments}
    rows = ["| key | type | default | meaning |", "|-----|------|---------|---------|"]
    for f in info.fields:
        if f.name in skip:
            continue
        meaning = (note or {}).get(f.name) or comments.get(f.name, "")
        default = "(the host name)" if f.name == "device_id" else _default(f)
        rows.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


def _plugin_tables(key: str) -> list[str]:
    """A section per built-in type of a plugin table, with its own keys."""
    from pilog.plugins import find_plugin, options_of  # noqa: PLC0415

    kind = c.plugin_kind(key)
    parts = []
    for name in kind.builtin:
        options = options_of(find_plugin(kind, name))
        parts.append(f'\n### `type = "{name}"`\n\n')
        if msgspec.structs.fields(options):
            parts.append(_table(options))
        else:
            parts.append("No keys of its own.\n")
    return parts


def render() -> str:
    """The whole reference page."""
    parts = [HEADER, "\n## Top level\n\n", _table(c.Config, skip=_NESTED)]
    parts += ["\n## `[log]`\n\n", _table(c.LogConfig)]
    parts += [
        "\n## `[[sensor]]`\n\n",
        "One table per sensor. Keys other than these are the driver's own options: "
        "`pilog drivers NAME` prints them (type, allowed values, default, meaning) with a "
        "sample table ready to paste, `pilog drivers NAME --json` the same for scripts; each "
        "driver's `README.md` under `pilog/drivers/<driver>/` says how it treats bad input.\n\n",
        _table(c.SensorConfig, skip={"options"}),
    ]
    parts.append(
        "\n## `[[sink]]`\n\nOne table per sink; `type` selects the kind: a built-in type below, "
        '"package.module:Class", or an entry point of the `pilog.sinks` group. These keys are '
        "common to every type; the other keys are the type's own, listed per built-in type "
        "below (`pilog sinks TYPE` shows them too). Details of each wire format: "
        "[sinks](sinks.md).\n\n"
    )
    parts.append(_table(c.SinkConfig, skip={"options"}))
    parts += _plugin_tables("sink")
    parts.append(
        "\n## `[[projection]]`\n\nOne table per projection; `type` selects the kind: a built-in "
        'type below, "package.module:Class", or an entry point of the `pilog.projections` '
        "group: [projections](projections.md). These keys are common to every type:\n\n"
    )
    parts.append(_table(c.ProjectionConfig, skip={"options"}))
    parts += _plugin_tables("projection")
    parts += [
        "\n## `[projections]`\n\nThe lmdb map all projections share: address space, not disk "
        "(the file holds what they store). A full map doubles up to `map_size_max`; beyond it, "
        "projections pause and say what to do: [projections](projections.md#the-lmdb-map).\n\n",
        _table(c.ProjectionsConfig),
    ]
    parts += ["\n## `[metrics]`\n\n", _table(c.MetricsConfig)]
    parts += ["\n## The embedded default\n\n```toml\n", c.EMBEDDED_DEFAULT, "```\n"]
    return "".join(parts)


INIT_EXTRA = """
# Ship readings upstream, exactly once by event id (see docs/sinks.md):
# [[sink]]
# name = "keep"
# type = "http-json"                 # | "influx-line" | "mqtt"
# url = "https://keep-0001.local:8000/api/readings"
# token_file = "/etc/pilog/token"    # or $PILOG_SINK_KEEP_TOKEN

# A real sensor (see `pilog drivers` and pilog/drivers/<name>/sample.toml):
# [[sensor]]
# name = "lab-air"
# driver = "bme280"
# interval_ms = 5000
# bus = 1
# address = 0x76

# Prometheus metrics on /metrics:
# [metrics]
# listen = "127.0.0.1:9108"
"""


def init_text(device_id: str, data_dir: str) -> str:
    """A commented pilog.toml to start from: the embedded default, with this box's names."""
    text = c.EMBEDDED_DEFAULT.replace(
        "# pilog's embedded default: a virtual sensor and this host's health, data in "
        "./pilog-data.\n",
        "# pilog.toml: every key is described in docs/config.md.\n",
    ).replace('data_dir = "./pilog-data"', f'device_id = "{device_id}"\ndata_dir = "{data_dir}"')
    return text + INIT_EXTRA
