"""A sink's state as the operator sees it, with `pilog run` as a subprocess: lag and age of a
sink that never delivered, `pilog retry` after an outage, the recovery line, the endpoint pause
in status and /metrics (the same numbers: one snapshot), and the fix delivering everything once.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import httpx
from helpers import (
    assert_one_sentence_error,
    pilog,
    run_pilog,
    status_json,
    wait_until,
    write_config,
)

from pilog.testing.receiver import Receiver, fail

WIDE = {"COLUMNS": "300"}  # rich wraps table cells at the default 80 columns
LONG_S = 3600  # retry_max: a sink that waits this long would not send again within a test
RETRY_SOON_S = 30  # a drawn wait shorter than this might end within the test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_for(tmp_path: Path, url: str, *, metrics_port: int = 0, **sink: object) -> Path:
    keys = {"linger_ms": 20, "batch_max": 50, "retry_initial_ms": 10, "retry_max": 0.3, **sink}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items())
    metrics = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' if metrics_port else ""
    return write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        log={"fsync_interval_ms": 10},
        sensors=[{"name": "air", "interval_ms": 20}],
        extra=f'{metrics}\n[[sink]]\nname = "keep"\ntype = "http-json"\nurl = "{url}"\n{lines}\n',
    )


def keep_of(state: dict[str, object]) -> dict[str, object]:
    consumers = state["consumers"]
    assert isinstance(consumers, list)
    (keep,) = [c for c in consumers if c["name"] == "sink:keep"]
    assert isinstance(keep, dict)
    return keep


def status_now(config: Path) -> dict[str, object] | None:
    """`pilog status --json`, or None while the data dir is not made yet."""
    result = pilog("status", "--json", "-c", config)
    return json.loads(result.stdout) if result.returncode == 0 else None


def live_of(config: Path) -> dict[str, object] | None:
    state = status_now(config)
    live = keep_of(state).get("live") if state is not None else None
    return live if isinstance(live, dict) else None


def test_status_of_a_sink_that_never_delivered_shows_its_lag_age_and_next_try(
    tmp_path: Path,
) -> None:
    with Receiver() as gone:
        url = gone.url  # closed on leaving: every send fails, nothing is ever delivered
    config = config_for(tmp_path, url)
    with run_pilog(config) as p:

        def behind() -> dict[str, object] | None:
            state = status_now(config)
            if state is None:
                return None
            keep = keep_of(state)
            live = keep.get("live")
            ok = isinstance(live, dict) and live["attempts"] and keep.get("lag_events", 0)
            return keep if ok else None

        keep = wait_until(behind, "a sink that failed and is behind")
        human = pilog("status", "-c", config, env=WIDE).stdout
        assert p.stop() == 0
    live = keep["live"]
    assert isinstance(live, dict)
    assert keep["next_seq"] is None  # it never committed a cursor
    assert isinstance(keep["lag_events"], int)
    assert keep["lag_events"] >= 1
    assert isinstance(keep["lag_s"], float)
    assert keep["lag_s"] > 0
    assert live["lag_events"] == keep["lag_events"]
    assert live["oldest_ns"] is not None
    assert live["retry_at_ns"] is not None
    assert live["failing_since_ns"] is not None
    assert live["last_error_ns"] is not None
    row = next(line for line in human.splitlines() if "sink:keep" in line)
    assert re.search(r" events?, ", row)  # the lag, not "- │ -"; "1 event" when one
    assert "next try in" in human
    # Stopped, from disk: the lag counts from the oldest event, where the sink starts.
    keep = keep_of(status_json("-c", config))
    assert "live" not in keep
    assert isinstance(keep["lag_events"], int)
    assert keep["lag_events"] >= 1


def test_retry_after_an_outage_sends_at_once_and_the_recovery_is_logged(tmp_path: Path) -> None:
    with Receiver() as first:
        port = first.port
        url = first.url
    # A first wait of up to an hour: without `pilog retry` nothing is sent again in this test.
    config = config_for(tmp_path, url, retry_initial_ms=LONG_S * 1000, retry_max=LONG_S)
    with run_pilog(config) as p:

        def waiting_long() -> bool:
            live = live_of(config)
            if live is None or not live["attempts"] or live["retry_at_ns"] is None:
                return False
            retry_at = live["retry_at_ns"]
            assert isinstance(retry_at, int)
            # Full jitter may draw a short wait; then the next attempt, due within
            # RETRY_SOON_S, draws again. A longer wait cannot end within the test's 10 s.
            return retry_at - time.time_ns() > RETRY_SOON_S * 1e9

        wait_until(waiting_long, "a sink waiting to retry", timeout=3 * RETRY_SOON_S)
        with Receiver(port=port) as back:
            result = pilog("retry", "keep", "-c", config)
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == "sending again now: keep"
            back.wait_for(10)
            line = p.stderr.wait_for(
                lambda s: "sink keep: delivering again after" in s, "the recovery line"
            )
            live = wait_until(
                lambda: (v := live_of(config)) and v["recovered_ns"] and v, "recovered state"
            )
            human = pilog("status", "-c", config, env=WIDE).stdout
            assert p.stop() == 0
    assert re.search(r"after \d+ failed attempts? over", line)
    assert "last error: network error" in line
    assert live["attempts"] == 0
    assert live["retry_at_ns"] is None
    assert "delivering again since" in " ".join(human.split())
    assert "(before recovery)" in " ".join(human.split())


def test_retry_says_when_pilog_is_not_running_or_the_sink_is_unknown(tmp_path: Path) -> None:
    with Receiver() as rx:
        config = config_for(tmp_path, rx.url)
        assert "is not running" in assert_one_sentence_error(pilog("retry", "-c", config))
        with run_pilog(config) as p:
            rx.wait_for(1)
            unknown = pilog("retry", "nope", "-c", config)
            idle = pilog("retry", "-c", config)
            assert p.stop() == 0
    line = assert_one_sentence_error(unknown)
    assert "no sink named 'nope'" in line
    assert "keep" in line
    assert idle.returncode == 0, idle.stderr
    assert "not waiting to retry" in idle.stdout


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_an_endpoint_refusing_everything_pauses_in_status_and_metrics_then_the_fix_delivers_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    with Receiver() as rx:
        rx.always(fail(404, '{"error": "no such route"}'))
        wrong = rx.base_url + "/api/readingz"
        # Three readings, then one a day: enough to tell a wrong endpoint from a bad reading,
        # and the log stands still while status and /metrics are compared.
        config = write_config(
            tmp_path / "pilog.toml",
            tmp_path / "data",
            log={"fsync_interval_ms": 10},
            sensors=[{"name": n, "interval_ms": 86_400_000} for n in ("air", "soil", "water")],
            extra=f"""
[metrics]
listen = "127.0.0.1:{port}"

[[sink]]
name = "keep"
type = "http-json"
url = "{wrong}"
linger_ms = 20
retry_initial_ms = 10
retry_max = {LONG_S}
""",
        )
        with run_pilog(config) as p:
            line = p.stderr.wait_for(lambda s: "refuses every reading" in s, "the pause line")
            state = status_json("-c", config)
            values = scrape(port)
            assert p.stop() == 0
        assert rx.ids() == set()

        # The fix: the corrected url, and pilog restarted.
        rx.always(None)
        config.write_text(config.read_text().replace(wrong, rx.url))
        with run_pilog(config) as p:
            rx.wait_for(1)
            wait_until(
                lambda: keep_of(status_json("-c", config)).get("lag_events") == 0, "caught up"
            )
            assert p.stop() == 0
        stored = [q.n_objects for q in rx.requests if q.status == 200]
        assert rx.duplicates == 0
    assert wrong in line
    assert "HTTP 404" in line
    assert "Check the url" in line
    keep = keep_of(state)
    live = keep["live"]
    assert isinstance(live, dict)
    assert live["state"] == "paused"
    assert live["paused_reason"] == "endpoint"
    assert live["dead_letters"] == 0
    assert keep["next_seq"] is None
    assert state["dead_letters"] == 0
    assert not (tmp_path / "data" / "deadletter").exists()
    labels = '{consumer="sink:keep"}'
    assert values['pilog_consumer_paused{consumer="sink:keep",reason="endpoint"}'] == 1
    assert values[f"pilog_consumer_lag_events{labels}"] == keep["lag_events"] >= 1
    assert values[f"pilog_consumer_retries_total{labels}"] == live["retries"]
    assert values[f"pilog_dead_letters_total{labels}"] == 0
    assert (
        values[f"pilog_consumer_next_retry_timestamp_seconds{labels}"] == live["retry_at_ns"] / 1e9
    )
    assert sum(stored) >= 1
