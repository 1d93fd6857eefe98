"""Sinks: the registry of sink types.

A `[[sink]]` table's `type` names a built-in sink (a folder here: `http_json` is
`http-json`), a class by `"package.module:Class"`, or an entry point in the `pilog.sinks`
group. The class follows `pilog.uploader.sink.SinkPlugin`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pilog.config import SinkConfig
from pilog.errors import ConfigError
from pilog.plugins import PluginKind, convert_options, extra_missing, find_plugin
from pilog.uploader.sink import SinkContext, SinkPlugin

__all__ = ["BUILTIN", "KIND", "find_sink", "open_sink", "sink_options"]

_HERE = Path(__file__).parent
# Every folder here with a sink.py is a built-in sink, its type the folder's name with `-`
# for `_`; its module exposes the class as SINK (as drivers expose DRIVER).
BUILTIN: dict[str, str] = {
    p.parent.name.replace("_", "-"): f"pilog.uploader.sinks.{p.parent.name}.sink:SINK"
    for p in sorted(_HERE.glob("*/sink.py"))
}
KIND = PluginKind("sink", BUILTIN, "pilog.sinks", "pilog sinks")


def find_sink(ref: str, search: Sequence[Path] = ()) -> type[SinkPlugin]:
    """The sink class named by a built-in type, "module:Class", or an entry point.

    `search`: directories where a "module:Class" sink's module may live (the config file's
    directory and its `driver_paths`).
    """
    cls = find_plugin(KIND, ref, search)
    methods = ("send", "probe", "close", "where")
    missing = [m for m in methods if not callable(getattr(cls, m, None))]
    if not isinstance(cls, type) or missing:
        lacks = f"; it lacks {', '.join(missing)}" if missing else ""
        raise ConfigError(
            f"sink '{ref}' is not a sink class: it needs send, probe, close and where "
            f"(pilog.uploader.sink.SinkPlugin){lacks}"
        )
    return cls  # checked structurally above


def sink_options(cls: type[SinkPlugin], config: SinkConfig) -> Any:
    """The sink's `Options` from the table's other keys; ConfigError naming the sink."""
    import msgspec  # noqa: PLC0415

    try:
        return convert_options(cls, config.options)
    except msgspec.ValidationError as e:
        raise ConfigError(f"sink {config.name}: {e}") from e


def open_sink(config: SinkConfig, context: SinkContext, search: Sequence[Path] = ()) -> SinkPlugin:
    """The sink for `config`, ready to send; imports only the chosen sink's module."""
    cls = find_sink(config.type, search)
    options = sink_options(cls, config)
    try:
        return cls(config, options, context)
    except ImportError as e:
        what = f"the {config.type} sink" if config.type in BUILTIN else f"sink {config.name}"
        raise ConfigError(extra_missing(what, cls, getattr(cls, "extra", None))) from e
