"""The sink contract suite against the influx-line sink and a real VictoriaMetrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pilog.events import Value
from pilog.testing.sink_contract import (
    DEVICE_ID,
    NON_ASCII_FIELD,
    SENSOR_TYPE,
    Endpoint,
    SinkContract,
    StoredReading,
    event_id,
    seq_of_ms,
)
from pilog.testing.tcp_proxy import ProxiedEndpoint, TcpProxy

if TYPE_CHECKING:
    from conftest import StartVictoriaMetrics, VictoriaMetrics


class VictoriaMetricsEndpoint(ProxiedEndpoint):
    """VictoriaMetrics behind a proxy. A point is identified by series and time, so a point
    written twice is one point (VictoriaMetrics keeps both raw samples until it
    de-duplicates; InfluxDB overwrites): stored() lists each point once."""

    def __init__(self, vm: VictoriaMetrics) -> None:
        self.vm = vm
        port = int(vm.url.rsplit(":", 1)[1])
        self.proxy = TcpProxy(("127.0.0.1", port))
        self.url = f"http://127.0.0.1:{self.proxy.port}"

    def stored(self) -> list[StoredReading]:
        prefix = f"{SENSOR_TYPE}_"
        readings: dict[int, tuple[str, dict[str, Value]]] = {}
        for series in self.vm.export(f'{{device="{DEVICE_ID}"}}'):
            metric = series["metric"]
            name = metric["__name__"].removeprefix(prefix)
            for ts_ms, value in zip(series["timestamps"], series["values"], strict=True):
                seq = seq_of_ms(ts_ms)
                # Every sample is a float64; the export writes whole ones without a point.
                readings.setdefault(seq, (metric["sensor"], {}))[1][name] = float(value)
        return [StoredReading(event_id(s), sensor, v) for s, (sensor, v) in readings.items()]


class TestInfluxLineContract(SinkContract):
    sink_type = "influx-line"
    exactly_once = True  # by point identity (series and time), as the module doc says
    # VictoriaMetrics keeps every value as a float64 rounded to about 15 significant digits
    # (0.1 + 0.2 comes back as 0.3) and -0 as 0; the sink writes each float's exact repr
    # (test_influx_line.py checks the body). What it keeps exactly is checked here.
    kept_fields = ("huge", NON_ASCII_FIELD)

    @pytest.fixture
    def endpoint(self, start_victoria_metrics: StartVictoriaMetrics) -> Iterator[Endpoint]:
        endpoint = VictoriaMetricsEndpoint(start_victoria_metrics())
        yield endpoint
        endpoint.close()

    def sink_table(self, endpoint: Any) -> dict[str, Any]:
        return {"url": endpoint.url, "api": "v1", "database": "pilog"}

    def secret_table(self, secret: str, tmp_path: Path) -> dict[str, Any] | None:
        token = tmp_path / "token"
        token.write_text(secret + "\n")
        token.chmod(0o600)
        return {"token_file": str(token)}
