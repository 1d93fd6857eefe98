"""Sink probes: the url's shape, the receiver's side of the http-json probe, and `pilog check`
(as a subprocess) against a real VictoriaMetrics on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from helpers import PILOG, WAIT_S, clean_env, toml_value, write_config

from pilog.config import SinkConfig, sink_from_table
from pilog.testing.receiver import Receiver
from pilog.uploader import probe
from pilog.uploader.sinks import find_sink, sink_options
from pilog.uploader.sinks.influx_line import sink as influx_line
from pilog.uploader.sinks.mqtt import sink as mqtt

if TYPE_CHECKING:
    from conftest import StartVictoriaMetrics, VictoriaMetrics

TOKEN = "vm-t0ken"


# --- the url's shape ---------------------------------------------------------------------------


def influx(url: str, **keys: Any) -> SinkConfig:
    table = {"name": "vm", "type": "influx-line", "url": url, "bucket": "pilog"} | keys
    return sink_from_table({k: v for k, v in table.items() if v is not None})


def mqtt_sink(url: str) -> SinkConfig:
    return sink_from_table({"name": "m", "type": "mqtt", "url": url})


def url_problem(config: SinkConfig) -> str | None:
    """What the sink's probe says of its url's shape before it connects, or None."""
    options = sink_options(find_sink(config.type), config)
    problem = probe.url_problem(options.url)
    if problem is None and config.type == "influx-line":
        problem = influx_line.url_problem(options)
    if problem is None and config.type == "mqtt":
        problem = mqtt.url_problem(options)
    return problem


@pytest.mark.parametrize(
    ("config", "fix"),
    [
        pytest.param(
            influx("http://127.0.0.1:8428/api/v2/write"),
            'write url = "http://127.0.0.1:8428"',
            id="v2 write path",
        ),
        pytest.param(
            influx("http://vm:8428/write/", api="v1", database="pilog", bucket=None),
            'write url = "http://vm:8428"',
            id="v1 write path with a slash",
        ),
        pytest.param(
            influx("https://proxy.example/influx/api/v2/write"),
            'write url = "https://proxy.example/influx"',
            id="write path under a prefix",
        ),
        pytest.param(
            influx("http://influx:8086?db=sensors"),
            'write url = "http://influx:8086", database = "sensors", api = "v1"',
            id="database in the query",
        ),
        pytest.param(
            influx("http://influx:8086/api/v2/write?org=home&bucket=air"),
            'write url = "http://influx:8086", bucket = "air", org = "home"',
            id="bucket and org in the query",
        ),
        pytest.param(
            mqtt_sink("mqtt://broker:1883/plant"),
            'write url = "mqtt://broker:1883" and put the prefix in topic '
            '(topic = "plant/{device_id}/{sensor}")',
            id="mqtt path",
        ),
        pytest.param(
            influx("http://influx:99999"),
            "has a bad port",
            id="bad port",
        ),
    ],
)
def test_url_of_the_wrong_shape_is_named_with_the_fix(config: SinkConfig, fix: str) -> None:
    problem = url_problem(config)
    assert problem is not None
    assert fix in problem


def test_influx_write_path_problem_shows_where_it_would_post() -> None:
    problem = url_problem(influx("http://127.0.0.1:8428/api/v2/write"))
    assert problem is not None
    assert "http://127.0.0.1:8428/api/v2/write/api/v2/write?bucket=pilog" in problem


@pytest.mark.parametrize(
    "config",
    [
        influx("http://127.0.0.1:8428"),
        influx("http://127.0.0.1:8428/"),
        influx("https://proxy.example/influx"),
        influx("http://vm:8428", api="v1", database="pilog", bucket=None),
        mqtt_sink("mqtts://broker"),
    ],
    ids=str,
)
def test_url_of_the_right_shape_passes(config: SinkConfig) -> None:
    assert url_problem(config) is None


# --- the receiver's side of the http-json probe ------------------------------------------------


def test_receiver_acknowledges_the_empty_batch_and_stores_nothing() -> None:
    with Receiver(token=TOKEN) as rx, httpx.Client(trust_env=False) as client:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"}
        answer = client.post(rx.url, content=gzip.compress(b"[]"), headers=headers)
        refused = client.post(rx.url, content=b"[]", headers={"Authorization": "Bearer other"})
        assert answer.status_code == 200
        assert answer.json() == {"accepted": 0, "new": 0}
        assert refused.status_code == 401
        assert [r.outcome for r in rx.requests] == ["probe", "unauthorized"]
        assert rx.events == {}
        assert rx.raw_count == 0


def test_receiver_with_a_path_answers_404_elsewhere() -> None:
    with Receiver(path="/api/readings") as rx, httpx.Client(trust_env=False) as client:
        assert client.post(rx.base_url + "/api/reading", content=b"[]").status_code == 404
        assert client.post(rx.url + "?x=1", content=b"[]").status_code == 200
        assert [r.outcome for r in rx.requests] == ["not_found", "probe"]


# --- pilog check against a real VictoriaMetrics ------------------------------------------------


def check(tmp_path: Path, **sink: object) -> tuple[int, dict[str, Any]]:
    """`pilog check --json` with one influx-line sink named vm: (exit code, its row)."""
    keys = {"name": "vm", "type": "influx-line", **sink}
    table = "\n[[sink]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
    config = write_config(tmp_path / "pilog.toml", tmp_path / "data", extra=table)
    result = subprocess.run(
        [*PILOG, "check", "--json", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=clean_env(),
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    [row] = [r for r in json.loads(result.stdout) if r["what"] == "sink:vm"]
    return result.returncode, row


@pytest.mark.parametrize(
    "api", [{"api": "v2", "bucket": "pilog", "org": "home"}, {"api": "v1", "database": "pilog"}]
)
@pytest.mark.parametrize("use_gzip", [True, False])
def test_good_influx_line_sink_passes_and_writes_nothing(
    tmp_path: Path, victoria_metrics: VictoriaMetrics, api: dict[str, str], use_gzip: bool
) -> None:
    code, row = check(tmp_path, url=victoria_metrics.url, gzip=use_gzip, **api)
    assert code == 0, row
    assert "an empty write to" in row["detail"]
    assert "was accepted (HTTP 204)" in row["detail"]
    assert victoria_metrics.export('{__name__=~".+"}') == []


@pytest.mark.parametrize("path", ["/api/v2/write", "/write"])
def test_full_write_path_fails_with_the_base_url_to_write_instead(
    tmp_path: Path, victoria_metrics: VictoriaMetrics, path: str
) -> None:
    code, row = check(tmp_path, url=victoria_metrics.url + path, bucket="pilog")
    assert code == 1
    assert not row["ok"]
    assert f'write url = "{victoria_metrics.url}"' in row["detail"]


def test_path_prefix_vm_does_not_serve_fails_at_ping_asking_for_the_base_url(
    tmp_path: Path, victoria_metrics: VictoriaMetrics
) -> None:
    code, row = check(tmp_path, url=victoria_metrics.url + "/no/such/prefix", bucket="pilog")
    assert code == 1
    # VictoriaMetrics answers 400 "unsupported path" where InfluxDB answers 404.
    assert "HTTP 400" in row["detail"]
    assert "unsupported path" in row["detail"]
    assert "url must be the server's base URL" in row["detail"]


def test_token_the_server_refuses_fails_naming_the_token_file(
    tmp_path: Path, start_victoria_metrics: StartVictoriaMetrics
) -> None:
    vm = start_victoria_metrics("-httpAuth.username=pilog", "-httpAuth.password=other")
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    code, row = check(tmp_path, url=vm.url, bucket="pilog", token_file=str(token))
    assert code == 1
    assert "refused the token" in row["detail"]
    assert "HTTP 401" in row["detail"]
    assert str(token) in row["detail"]
    assert TOKEN not in row["detail"]


def test_basic_auth_the_server_takes_passes(
    tmp_path: Path, start_victoria_metrics: StartVictoriaMetrics
) -> None:
    vm = start_victoria_metrics("-httpAuth.username=pilog", f"-httpAuth.password={TOKEN}")
    token = tmp_path / "token"
    token.write_text(f"pilog:{TOKEN}")
    token.chmod(0o600)
    code, row = check(
        tmp_path, url=vm.url, api="v1", database="pilog", auth="basic", token_file=str(token)
    )
    assert (code, row["ok"]) == (0, True), row["detail"]
    code, row = check(tmp_path, url=vm.url, api="v1", database="pilog", token_file=str(token))
    assert code == 1
    assert 'auth = "basic"' in row["detail"]


def test_stopped_server_is_a_refused_connection(
    tmp_path: Path, victoria_metrics: VictoriaMetrics
) -> None:
    victoria_metrics.stop()
    code, row = check(tmp_path, url=victoria_metrics.url, bucket="pilog")
    assert code == 1
    assert "refused the connection" in row["detail"]
