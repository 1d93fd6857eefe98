"""The built-in sinks, by config type."""

from __future__ import annotations

from pilog.config import HttpJsonSinkConfig, InfluxLineSinkConfig, MqttSinkConfig, SinkConfig
from pilog.uploader.sink import Sink, SinkContext


def open_sink(config: SinkConfig, context: SinkContext) -> Sink:
    """The sink for `config`; imports only the chosen sink's module (mqtt is an extra)."""
    if isinstance(config, HttpJsonSinkConfig):
        from pilog.uploader.sinks.http_json import HttpJsonSink  # noqa: PLC0415

        return HttpJsonSink(config, context)
    if isinstance(config, InfluxLineSinkConfig):
        from pilog.uploader.sinks.influx_line import InfluxLineSink  # noqa: PLC0415

        return InfluxLineSink(config, context)
    if isinstance(config, MqttSinkConfig):
        from pilog.uploader.sinks.mqtt import MqttSink  # noqa: PLC0415

        return MqttSink(config, context)
    raise TypeError(f"no sink for {type(config).__name__}")
