"""`[metrics] listen`: the Prometheus page of a running `pilog run`, scraped over HTTP."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
from helpers import assert_one_sentence_error, pilog, run_pilog, wait_until, write_config

from pilog.testing.receiver import Receiver

FAMILIES = {
    "pilog_appends_total": "counter",
    "pilog_durable_seq": "gauge",
    "pilog_bytes_written_total": "counter",
    "pilog_fsync_seconds": "histogram",
    "pilog_log_bytes": "gauge",
    "pilog_log_max_bytes": "gauge",
    "pilog_log_full": "gauge",
    "pilog_log_io_error": "gauge",
    "pilog_repairs_total": "counter",
    "pilog_gaps_total": "counter",
    "pilog_clock_steps_total": "counter",
    "pilog_driver_readings_total": "counter",
    "pilog_driver_errors_total": "counter",
    "pilog_driver_dropped_total": "counter",
    "pilog_driver_up": "gauge",
    "pilog_consumer_lag_events": "gauge",
    "pilog_consumer_delivered_total": "counter",
    "pilog_consumer_retries_total": "counter",
    "pilog_dead_letters_total": "counter",
    "pilog_consumer_lag_seconds": "gauge",
    "pilog_consumer_paused": "gauge",
    "pilog_consumer_next_retry_timestamp_seconds": "gauge",
}
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (-?[0-9.e+]+|\+Inf|NaN)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """TYPE per family and value per `name{labels}`; every line must be well formed."""
    types: dict[str, str] = {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line.startswith("# HELP "):
            continue
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return types, values


def test_every_family_is_served_from_the_start_and_counts_what_happened(tmp_path: Path) -> None:
    port = free_port()
    with Receiver() as rx:
        down = rx.url  # closed on leaving: this sink only retries
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        log={"fsync_interval_ms": 10},
        sensors=[{"name": "air", "interval_ms": 10}],
        extra=f"""
[metrics]
listen = "127.0.0.1:{port}"

[[sink]]
name = "down"
type = "http-json"
url = "{down}"
retry_initial_ms = 5
retry_max = 0.05

[[projection]]
type = "latest"
commit_interval = "50ms"
""",
    )
    url = f"http://127.0.0.1:{port}/metrics"
    with run_pilog(config) as p:

        def scrape() -> tuple[dict[str, str], dict[str, float]] | None:
            try:
                r = httpx.get(url, timeout=5)
            except httpx.TransportError:
                return None
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            types, values = parse(r.text)
            done = values.get('pilog_consumer_retries_total{consumer="sink:down"}', 0) >= 2
            return (types, values) if done and values["pilog_appends_total"] >= 10 else None

        types, values = wait_until(scrape, "a scrape with appends and retries")
        assert httpx.get(url.replace("/metrics", "/other"), timeout=5).status_code == 404
        assert p.stop() == 0
    assert types == FAMILIES
    assert values['pilog_driver_readings_total{sensor="air"}'] >= 1
    assert values['pilog_driver_up{sensor="air"}'] == 1
    assert values["pilog_fsync_seconds_count"] >= 1
    assert values['pilog_fsync_seconds_bucket{le="+Inf"}'] == values["pilog_fsync_seconds_count"]
    assert values["pilog_bytes_written_total"] > 0
    assert values['pilog_consumer_lag_events{consumer="sink:down"}'] >= 1
    assert 'pilog_consumer_lag_events{consumer="projection:latest"}' in values
    assert values['pilog_dead_letters_total{consumer="sink:down"}'] == 0
    assert values["pilog_gaps_total"] == 0


def test_every_family_is_in_the_table_of_operations_md() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert set(re.findall(r"^\| `(pilog_[a-z_]+)` \|", text, re.MULTILINE)) == set(FAMILIES)


def test_a_bad_listen_address_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "pilog.toml", tmp_path / "data", extra='[metrics]\nlisten = "9108"\n'
    )
    line = assert_one_sentence_error(pilog("check", "-c", config))
    assert "metrics: listen: expected HOST:PORT" in line
