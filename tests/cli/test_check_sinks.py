"""`pilog check` probes every sink: the CLI as a subprocess against a real receiver and a real
mosquitto on 127.0.0.1, one row per sink, exit 1 when one fails. VictoriaMetrics' cases are in
tests/uploader/test_probe.py, beside its fixture.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from helpers import PILOG, WAIT_S, clean_env, pilog, toml_value, write_config
from mosquitto import (
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    OPENSSL,
    Broker,
    missing,
    password_file,
    start_broker,
    tls_files,
)
from paho.mqtt.enums import CallbackAPIVersion

from pilog.cli import check as check_cmd
from pilog.config import load_config
from pilog.testing.receiver import Receiver, stall

TOKEN = "t0ken-for-the-probe"
PATH = "/api/readings"
USER, PASSWORD = "pilog", "mqtt-pa55word"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(token=TOKEN, path=PATH) as rx:
        yield rx


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if reason := missing(MOSQUITTO, "mosquitto"):
        pytest.skip(reason)
    b = start_broker(tmp_path)
    yield b
    b.stop()


def sink_toml(**keys: object) -> str:
    return "\n[[sink]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())


def check(tmp_path: Path, *sinks: str, prefix: tuple[str, ...] = PILOG) -> tuple[int, Any]:
    """`pilog check --json` of a config with these `[[sink]]` tables: (exit code, rows)."""
    config = write_config(tmp_path / "pilog.toml", tmp_path / "data", extra="".join(sinks))
    result = subprocess.run(
        [*prefix, "check", "--json", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=clean_env(),
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def sink_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["what"]: r for r in rows if r["what"].startswith("sink:")}


def token_file(tmp_path: Path, token: str = TOKEN) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def http_json(url: str, **keys: object) -> str:
    return sink_toml(name="keep", type="http-json", url=url, **keys)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- http-json against the receiver ------------------------------------------------------------


def test_good_http_json_sink_passes_and_the_probe_stores_nothing(
    tmp_path: Path, receiver: Receiver
) -> None:
    code, rows = check(tmp_path, http_json(receiver.url, token_file=token_file(tmp_path)))
    assert code == 0, rows
    row = sink_rows(rows)["sink:keep"]
    assert row["ok"]
    assert row["driver"] == "http-json"
    assert "acknowledged the probe" in row["detail"]
    [probe] = receiver.requests
    assert probe.outcome == "probe"
    assert probe.n_objects == 0
    assert probe.headers["authorization"] == f"Bearer {TOKEN}"
    assert probe.headers["user-agent"].startswith("pilog/")
    assert receiver.events == {}


@pytest.mark.parametrize(("path", "note"), [("/api/reading", ""), ("", " (it has none)")])
def test_wrong_path_fails_asking_for_the_endpoints_full_path(
    tmp_path: Path, receiver: Receiver, path: str, note: str
) -> None:
    url = receiver.base_url + path
    code, rows = check(tmp_path, http_json(url, token_file=token_file(tmp_path)))
    assert code == 1
    row = sink_rows(rows)["sink:keep"]
    assert not row["ok"]
    assert "HTTP 404" in row["detail"]
    assert f"url must be the endpoint's full path{note}, e.g. " in row["detail"]


def test_refused_token_fails_naming_the_token_file_and_not_the_token(
    tmp_path: Path, receiver: Receiver
) -> None:
    secret = token_file(tmp_path, "not-" + TOKEN)
    code, rows = check(tmp_path, http_json(receiver.url, token_file=secret))
    assert code == 1
    detail = sink_rows(rows)["sink:keep"]["detail"]
    assert "refused the token" in detail
    assert "HTTP 401" in detail
    assert str(secret) in detail
    assert "not-" + TOKEN not in json.dumps(rows)


def test_missing_token_says_how_to_configure_one(tmp_path: Path, receiver: Receiver) -> None:
    code, rows = check(tmp_path, http_json(receiver.url))
    assert code == 1
    assert "set token_file (or $PILOG_SINK_KEEP_TOKEN)" in sink_rows(rows)["sink:keep"]["detail"]


def test_refused_connection_is_its_own_message(tmp_path: Path) -> None:
    port = closed_port()
    code, rows = check(tmp_path, http_json(f"http://127.0.0.1:{port}{PATH}"))
    assert code == 1
    detail = sink_rows(rows)["sink:keep"]["detail"]
    assert f"127.0.0.1:{port} refused the connection" in detail


def test_unresolvable_host_is_its_own_message(tmp_path: Path) -> None:
    # `.invalid` never resolves (RFC 6761).
    code, rows = check(tmp_path, http_json("http://no-such-host.invalid/api/readings"))
    assert code == 1
    assert (
        "cannot resolve the host 'no-such-host.invalid'" in sink_rows(rows)["sink:keep"]["detail"]
    )


def test_unanswered_connect_ends_at_the_sinks_timeout(tmp_path: Path) -> None:
    # A listener with a full accept queue drops further SYNs, as a firewall does: connect hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            code, rows = check(tmp_path, http_json(f"http://127.0.0.1:{port}{PATH}", timeout="1s"))
        finally:
            for filler in fillers:
                filler.close()
    assert code == 1
    assert f"no answer from 127.0.0.1:{port} within 1s" in sink_rows(rows)["sink:keep"]["detail"]


def test_a_receiver_that_never_answers_ends_at_the_sinks_timeout(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.script(stall(WAIT_S))  # cut short when the receiver closes
    sink = http_json(receiver.url, token_file=token_file(tmp_path), timeout="1s")
    code, rows = check(tmp_path, sink)
    assert code == 1
    detail = sink_rows(rows)["sink:keep"]["detail"]
    assert f"no answer from {receiver.url} within 1s" in detail


def test_behind_a_proxy_the_request_goes_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The receiver plays the proxy: httpx sends it the absolute URL, which it accepts as a path.
    with Receiver() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://user:proxy-secret@127.0.0.1:{proxy.port}")
        code, rows = check(tmp_path, http_json("http://pilog-keep.invalid/api/readings"))
        [request] = proxy.requests
    assert code == 0, rows
    detail = sink_rows(rows)["sink:keep"]["detail"]
    assert detail.endswith("(through $HTTP_PROXY)")
    assert "proxy-secret" not in json.dumps(rows)
    assert request.path == "http://pilog-keep.invalid/api/readings"
    assert request.outcome == "probe"


def test_one_row_per_sink_in_the_table_and_in_json(tmp_path: Path, receiver: Receiver) -> None:
    good = sink_toml(
        name="good", type="http-json", url=receiver.url, token_file=token_file(tmp_path)
    )
    bad = sink_toml(name="bad", type="http-json", url=f"http://127.0.0.1:{closed_port()}{PATH}")
    code, rows = check(tmp_path, good, bad)
    assert code == 1
    assert {k: r["ok"] for k, r in sink_rows(rows).items()} == {
        "sink:good": True,
        "sink:bad": False,
    }
    table = pilog("check", "-c", tmp_path / "pilog.toml")
    assert table.returncode == 1
    lines = table.stdout.splitlines()
    assert [line.split("│")[1].strip() for line in lines if "sink:" in line] == [
        "sink:good",
        "sink:bad",
    ]


# --- mqtt against a real mosquitto ----------------------------------------------------------


def mqtt_sink(url: str, **keys: object) -> str:
    return sink_toml(name="broker", type="mqtt", url=url, **keys)


def test_good_mqtt_sink_passes_without_taking_over_the_running_sinks_session(
    tmp_path: Path, broker: Broker
) -> None:
    # A client holding the sink's own client id, as a running pilog does: a second CONNECT with
    # that id would make the broker drop it.
    disconnected = threading.Event()
    connected = threading.Event()
    running = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pilog-test-device-broker")
    running.on_connect = lambda *_: connected.set()
    running.on_disconnect = lambda *_: disconnected.set()
    running.connect("127.0.0.1", broker.port)
    running.loop_start()
    try:
        assert connected.wait(WAIT_S)
        code, rows = check(tmp_path, mqtt_sink(broker.url))
        assert not disconnected.is_set(), "the probe took over the running sink's session"
    finally:
        running.disconnect()
        running.loop_stop()
    assert code == 0, rows
    assert "accepted the connection" in sink_rows(rows)["sink:broker"]["detail"]
    assert "pilog-test-device-broker-check" in broker.log_text()


@pytest.mark.skipif(bool(missing(MOSQUITTO_PASSWD, "mosquitto")), reason="no mosquitto_passwd")
def test_refused_mqtt_credentials_fail_with_what_to_check(tmp_path: Path) -> None:
    if reason := missing(MOSQUITTO, "mosquitto"):
        pytest.skip(reason)
    broker = start_broker(tmp_path, password_file=password_file(tmp_path, USER, PASSWORD))
    try:
        wrong = tmp_path / "mqtt-password"
        wrong.write_text("not-" + PASSWORD)
        wrong.chmod(0o600)
        code, rows = check(
            tmp_path,
            mqtt_sink(broker.url, username=USER, password_file=wrong),
            sink_toml(name="anonymous", type="mqtt", url=broker.url),
        )
        right = tmp_path / "right-password"
        right.write_text(PASSWORD)
        right.chmod(0o600)
        good_code, good_rows = check(
            tmp_path, mqtt_sink(broker.url, username=USER, password_file=right)
        )
    finally:
        broker.stop()
    assert code == 1
    by_name = sink_rows(rows)
    # mosquitto 2 refuses both with CONNACK 5, "Not authorized".
    assert "refused the connection" in by_name["sink:broker"]["detail"]
    assert (
        f"check username ('{USER}') and the password in {wrong}" in by_name["sink:broker"]["detail"]
    )
    assert "no username is configured" in by_name["sink:anonymous"]["detail"]
    assert PASSWORD not in json.dumps(rows)
    assert good_code == 0, good_rows


@pytest.mark.skipif(bool(missing(OPENSSL, "openssl")), reason="no openssl")
def test_mqtts_broker_is_verified_against_ca_bundle(tmp_path: Path) -> None:
    if reason := missing(MOSQUITTO, "mosquitto"):
        pytest.skip(reason)
    ca, cert, key = tls_files(tmp_path)
    broker = start_broker(tmp_path, tls=(cert, key))
    try:
        url = f"mqtts://127.0.0.1:{broker.port}"
        code, rows = check(
            tmp_path,
            mqtt_sink(url, ca_bundle=str(ca)),
            sink_toml(name="system-cas", type="mqtt", url=url),
        )
    finally:
        broker.stop()
    assert code == 1
    by_name = sink_rows(rows)
    assert by_name["sink:broker"]["ok"], by_name
    untrusted = by_name["sink:system-cas"]["detail"]
    assert "certificate verify failed" in untrusted
    assert "set ca_bundle to the CA file that signed the server's certificate" in untrusted


def test_mqtt_without_paho_fails_with_the_pip_command(tmp_path: Path) -> None:
    # What an environment without the extra looks like: `import paho` raises ImportError.
    block_paho = (
        "import runpy, sys; sys.modules['paho'] = None; "
        "runpy.run_module('pilog', run_name='__main__')"
    )
    prefix = (sys.executable, "-c", block_paho)
    code, rows = check(tmp_path, mqtt_sink(f"mqtt://127.0.0.1:{closed_port()}"), prefix=prefix)
    assert code == 1
    assert "pip install 'paho-mqtt>=2.0'" in sink_rows(rows)["sink:broker"]["detail"]


# --- the probe's thread, in process --------------------------------------------------------------


def test_a_probe_that_raises_is_a_failed_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("surprise")

    monkeypatch.setattr(check_cmd, "probe_sink", broken)
    config = write_config(
        tmp_path / "pilog.toml", tmp_path / "data", sensors=(), extra=http_json(f"http://h{PATH}")
    )
    [row] = [o for o in check_cmd.check(load_config(config)) if o.what == "sink:keep"]
    assert not row.ok
    assert row.detail == "the probe failed: RuntimeError: surprise"


def test_a_probe_that_never_returns_is_a_failed_row_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def hung(*args: object) -> None:
        release.wait(WAIT_S)  # a resolver stuck past every timeout

    monkeypatch.setattr(check_cmd, "probe_sink", hung)
    monkeypatch.setattr(check_cmd, "PROBE_GRACE_S", 0.0)
    config = write_config(
        tmp_path / "pilog.toml", tmp_path / "data", sensors=(), extra=http_json(f"http://h{PATH}")
    )
    try:
        outcomes = check_cmd.check(load_config(config), timeout_s=0.01)
    finally:
        release.set()
    [row] = [o for o in outcomes if o.what == "sink:keep"]
    assert not row.ok
    assert row.detail == "the probe did not finish within 0.01s"
