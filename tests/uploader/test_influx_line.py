"""The influx-line sink: the encoder against the line protocol reference, the sink against a
real VictoriaMetrics (its `/write` and `/api/v2/write`) and a recording HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import logging
import math
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pilog.config import SinkConfig, sink_from_table
from pilog.errors import ConfigError
from pilog.events import Event, Reading, Value
from pilog.uploader.sink import Outcome, SinkContext
from pilog.uploader.sinks import open_sink, sink_options
from pilog.uploader.sinks.influx_line.sink import (
    InfluxLineSink,
    encode_batch,
    encode_lines,
    escape_key,
    escape_measurement,
    write_url,
)

if TYPE_CHECKING:
    from conftest import StartVictoriaMetrics, VictoriaMetrics

TS_NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
DEVICE = "dev-1"
TOKEN = "s3cr3t-t0ken-value"
WAIT_S = 30.0  # a bound for joining the recorder's thread, never a measured result


def event(
    seq: int,
    values: dict[str, Value],
    *,
    sensor: str = "air",
    sensor_type: str = "environment",
    ts_ns: int = TS_NS,
) -> Event:
    return Event(seq, ts_ns, 0, b"\0" * 16, Reading(sensor, sensor_type, values))


def line(values: dict[str, Value], **kwargs: Any) -> str:
    """The one line a single reading encodes to, without its newline."""
    body = encode_lines([event(1, values, **kwargs)], DEVICE).decode()
    assert body.endswith("\n")
    assert body.count("\n") == 1
    return body[:-1]


def field_text(value: Value) -> str:
    """What follows `v=` in the line of a reading whose only field is `v`."""
    return line({"v": value}).split(" v=", 1)[1].rsplit(" ", 1)[0]


# --- the encoder -------------------------------------------------------------------------------


def test_line_is_measurement_sorted_tags_fields_and_ns_timestamp() -> None:
    values: dict[str, Value] = {"temperature_c": 21.5, "count": 3, "ok": True, "label": "x"}
    assert line(values) == (
        "environment,device=dev-1,sensor=air "
        'temperature_c=21.5,count=3i,ok=true,label="x" 1700000000123456789'
    )


def test_one_line_per_reading_in_batch_order() -> None:
    batch = [event(1, {"a": 1.0}, sensor="s1"), event(2, {"a": 2.0}, sensor="s2", ts_ns=5)]
    assert encode_lines(batch, DEVICE) == (
        b"environment,device=dev-1,sensor=s1 a=1.0 1700000000123456789\n"
        b"environment,device=dev-1,sensor=s2 a=2.0 5\n"
    )


@pytest.mark.parametrize("value", [0.1, 1 / 3, -2.5e-300, 1e300, 123456789.123, -0.0])
def test_float_is_written_so_it_parses_back_exactly(value: float) -> None:
    text = field_text(value)
    assert float(text) == value
    assert math.copysign(1, float(text)) == math.copysign(1, value)


def test_integral_float_keeps_its_point_so_it_stays_a_float() -> None:
    assert field_text(2.0) == "2.0"


def test_int_gets_the_i_suffix() -> None:
    assert [field_text(v) for v in (0, -7, 2**63 - 1, -(2**63))] == [
        "0i",
        "-7i",
        "9223372036854775807i",
        "-9223372036854775808i",
    ]


def test_bool_is_true_or_false_not_an_int() -> None:
    assert (field_text(True), field_text(False)) == ("true", "false")


def test_string_is_quoted_with_quote_and_backslash_escaped() -> None:
    # The reference's example: a string field holding `too hot"` and a Windows path.
    assert field_text('too hot"') == '"too hot\\""'
    assert field_text("C:\\temp") == '"C:\\\\temp"'


def test_string_keeps_comma_equals_and_space_unescaped_inside_quotes() -> None:
    assert field_text("a, b=c") == '"a, b=c"'


def test_measurement_escapes_comma_and_space_but_not_equals() -> None:
    assert escape_measurement("my measurement,v2=x") == "my\\ measurement\\,v2=x"


def test_tag_values_and_field_keys_escape_comma_equals_and_space() -> None:
    assert escape_key("tag key,with=specials") == "tag\\ key\\,with\\=specials"
    assert line({"field key,a=b": 1}, sensor="living room, east=1") == (
        "environment,device=dev-1,sensor=living\\ room\\,\\ east\\=1 "
        "field\\ key\\,a\\=b=1i 1700000000123456789"
    )


def test_field_key_escapes_double_quote_so_it_cannot_open_a_string() -> None:
    assert line({'say "hi"': "x"}) == (
        'environment,device=dev-1,sensor=air say\\ \\"hi\\"="x" 1700000000123456789'
    )


def test_device_id_tag_is_escaped_like_any_tag_value() -> None:
    body = encode_lines([event(1, {"v": 1})], "pi 4,b=2").decode()
    assert body.startswith("environment,device=pi\\ 4\\,b\\=2,sensor=air ")


def test_trailing_backslash_is_doubled_so_it_cannot_escape_the_separator() -> None:
    assert line({"k\\": 1}, sensor="s\\", sensor_type="m\\") == (
        "m\\\\,device=dev-1,sensor=s\\\\ k\\\\=1i 1700000000123456789"
    )


def test_newlines_in_names_tags_and_strings_become_spaces() -> None:
    text = line({"a\nb": "x\r\ny"}, sensor="s\n1", sensor_type="m\rn")
    assert text == 'm\\ n,device=dev-1,sensor=s\\ 1 a\\ b="x  y" 1700000000123456789'


def test_measurement_starting_with_hash_is_escaped_so_it_is_not_a_comment() -> None:
    assert line({"v": 1}, sensor_type="#temp").startswith("\\#temp,device=")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1])
def test_field_the_protocol_cannot_carry_is_left_out(bad: Value) -> None:
    encoded = encode_batch([event(1, {"bad": bad, "good": 1.5})], DEVICE)
    assert encoded.body == b"environment,device=dev-1,sensor=air good=1.5 1700000000123456789\n"
    assert encoded.skipped_fields == 1
    assert encoded.skipped_seqs == []
    assert "skipped 1 field" in encoded.note()


def test_empty_field_key_is_left_out() -> None:
    assert line({"": 1, "v": 2}).split(" ")[1] == "v=2i"


def test_reading_with_no_writable_field_is_skipped_and_noted() -> None:
    batch = [event(7, {"t": math.nan}), event(8, {"t": 1.0}), event(9, {})]
    encoded = encode_batch(batch, DEVICE)
    assert encoded.lines == 1
    assert encoded.body.count(b"\n") == 1
    assert encoded.skipped_seqs == [7, 9]
    assert "skipped 2 readings with no writable field (seq 7, 9)" in encoded.note()


def test_reading_with_empty_sensor_type_is_skipped_and_noted() -> None:
    encoded = encode_batch([event(3, {"v": 1}, sensor_type="")], DEVICE)
    assert (encoded.body, encoded.skipped_seqs) == (b"", [3])


def test_clean_batch_has_no_note() -> None:
    assert encode_batch([event(1, {"v": 1})], DEVICE).note() == ""


names = st.text(max_size=12)
values = st.one_of(
    st.floats(), st.integers(min_value=-(2**70), max_value=2**70), st.booleans(), st.text()
)
readings = st.lists(st.tuples(names, names, st.dictionaries(names, values, max_size=4)), max_size=8)


@given(readings, names)
def test_each_writable_reading_is_exactly_one_line_without_raw_newlines(
    batch_spec: list[tuple[str, str, dict[str, Value]]], device_id: str
) -> None:
    batch = [
        event(seq, vals, sensor=sensor, sensor_type=stype, ts_ns=TS_NS + seq)
        for seq, (sensor, stype, vals) in enumerate(batch_spec)
    ]
    encoded = encode_batch(batch, device_id)
    lines = encoded.body.decode().split("\n")
    assert lines.pop() == ""  # every line ends in a newline, and only there
    assert len(lines) == encoded.lines == len(batch) - len(encoded.skipped_seqs)
    written = [e for e in batch if e.seq not in encoded.skipped_seqs]
    for text, e in zip(lines, written, strict=True):
        assert "\r" not in text
        assert not text.startswith("#")
        assert text.endswith(f" {e.ts_ns}")


# --- the sink against a recording server -------------------------------------------------------


@dataclass
class Recorder:
    """What the server answers, and the requests it saw."""

    status: int = 204
    body: bytes = b""
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _RecordingServer

    def do_POST(self) -> None:
        rec = self.server.recorder
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        rec.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(rec.status)
        self.send_header("Content-Length", str(len(rec.body)))
        self.end_headers()
        self.wfile.write(rec.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.recorder = Recorder()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


@pytest.fixture
def recorder() -> Iterator[_RecordingServer]:
    srv = _RecordingServer()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(WAIT_S)


@pytest.fixture
def context(tmp_path: Path) -> SinkContext:
    return SinkContext(device_id=DEVICE, epoch_hex="00" * 8, data_dir=tmp_path)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def config(url: str, **kwargs: Any) -> SinkConfig:
    kwargs.setdefault("api", "v1")
    if kwargs["api"] == "v1":
        kwargs.setdefault("database", "pilog")
    return sink_from_table({"name": "influx", "type": "influx-line", "url": url, **kwargs})


def open_influx(cfg: SinkConfig, context: SinkContext) -> InfluxLineSink:
    sink = open_sink(cfg, context)
    assert isinstance(sink, InfluxLineSink)
    return sink


def send_one(cfg: SinkConfig, context: SinkContext, batch: list[Event] | None = None) -> Outcome:
    sink = open_influx(cfg, context)
    try:
        return sink.send(batch or [event(1, {"v": 1.5})])
    finally:
        sink.close()


def test_v2_posts_to_api_v2_write_with_org_bucket_ns_and_token_scheme(
    recorder: _RecordingServer, context: SinkContext, token_file: Path
) -> None:
    cfg = config(recorder.url + "/", api="v2", org="acme labs", bucket="b&c", token_file=token_file)
    assert send_one(cfg, context).kind == "ack"
    path, headers, body = recorder.recorder.requests[0]
    assert path == "/api/v2/write?org=acme+labs&bucket=b%26c&precision=ns"
    assert headers["authorization"] == f"Token {TOKEN}"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == encode_lines([event(1, {"v": 1.5})], DEVICE)


def test_v1_posts_to_write_with_db_and_ns_and_plain_body_without_gzip(
    recorder: _RecordingServer, context: SinkContext
) -> None:
    assert send_one(config(recorder.url, gzip=False), context).kind == "ack"
    path, headers, body = recorder.recorder.requests[0]
    assert path == "/write?db=pilog&precision=ns"
    assert "authorization" not in headers
    assert "content-encoding" not in headers
    assert body == encode_lines([event(1, {"v": 1.5})], DEVICE)


def test_v2_without_org_leaves_it_to_the_token() -> None:
    cfg = config("http://h:8086/base/", api="v2", bucket="b")
    assert (
        write_url(sink_options(InfluxLineSink, cfg))
        == "http://h:8086/base/api/v2/write?bucket=b&precision=ns"
    )


@pytest.mark.parametrize(
    ("status", "kind"), [(401, "unauthorized"), (403, "unauthorized"), (400, "rejected")]
)
def test_refusal_detail_never_holds_the_token(
    recorder: _RecordingServer,
    context: SinkContext,
    token_file: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
    kind: str,
) -> None:
    recorder.recorder.status = status
    recorder.recorder.body = b'{"error": "bad auth"}'
    with caplog.at_level(logging.DEBUG):
        outcome = send_one(config(recorder.url, token_file=token_file), context)
    assert (outcome.kind, outcome.status) == (kind, status)
    assert TOKEN not in outcome.detail
    assert TOKEN not in caplog.text


def test_batch_with_nothing_writable_is_acked_without_a_request(
    recorder: _RecordingServer, context: SinkContext, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pilog.uploader"):
        outcome = send_one(config(recorder.url), context, [event(4, {"t": math.nan})])
    assert outcome.kind == "ack"
    assert "seq 4" in outcome.detail
    assert recorder.recorder.requests == []
    assert "seq 4" in caplog.text


def test_skipping_is_warned_once_until_a_clean_batch(
    recorder: _RecordingServer, context: SinkContext, caplog: pytest.LogCaptureFixture
) -> None:
    sink = open_influx(config(recorder.url), context)
    nan_batch = [event(1, {"t": math.nan, "h": 1.0})]
    with caplog.at_level(logging.WARNING, logger="pilog.uploader"):
        outcomes = [sink.send(b) for b in (nan_batch, nan_batch, [event(2, {"h": 1.0})])]
        outcomes.append(sink.send(nan_batch))
    sink.close()
    assert [o.kind for o in outcomes] == ["ack"] * 4
    assert [bool(o.detail) for o in outcomes] == [True, True, False, True]
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 2


# --- the sink against a real VictoriaMetrics ---------------------------------------------------


def by_name(series: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["metric"]["__name__"]: s for s in series}


@pytest.mark.parametrize("use_gzip", [True, False])
def test_readings_written_to_v1_write_read_back_with_names_tags_values_and_ms_times(
    victoria_metrics: VictoriaMetrics, context: SinkContext, use_gzip: bool
) -> None:
    batch = [
        event(1, {"temperature_c": 21.5, "count": 3, "ok": True}),
        event(2, {"temperature_c": -4.25, "count": 4, "ok": False}, ts_ns=TS_NS + 10**9),
    ]
    outcome = send_one(config(victoria_metrics.url, gzip=use_gzip), context, batch)
    assert outcome.kind == "ack", outcome

    series = by_name(victoria_metrics.wait_for_series('{device="dev-1"}', 3))
    assert set(series) == {"environment_temperature_c", "environment_count", "environment_ok"}
    for s in series.values():
        assert s["metric"] == {
            "__name__": s["metric"]["__name__"],
            "db": "pilog",
            "device": "dev-1",
            "sensor": "air",
        }
        assert s["timestamps"] == [TS_NS // 10**6, (TS_NS + 10**9) // 10**6]
    assert series["environment_temperature_c"]["values"] == [21.5, -4.25]
    assert series["environment_count"]["values"] == [3, 4]
    assert series["environment_ok"]["values"] == [1, 0]


def test_readings_written_to_api_v2_write_are_read_back(
    victoria_metrics: VictoriaMetrics, context: SinkContext
) -> None:
    cfg = config(victoria_metrics.url, api="v2", org="acme", bucket="pilog")
    assert send_one(cfg, context, [event(1, {"v": 2.5})]).kind == "ack"
    series = victoria_metrics.wait_for_series('{__name__="environment_v"}', 1)
    assert [(s["values"], s["metric"]["sensor"]) for s in series] == [([2.5], "air")]


def test_sending_the_same_batch_twice_leaves_one_point(
    victoria_metrics: VictoriaMetrics, context: SinkContext
) -> None:
    cfg = config(victoria_metrics.url)
    batch = [event(1, {"v": 2.5})]
    assert [send_one(cfg, context, batch).kind for _ in range(2)] == ["ack", "ack"]
    series = victoria_metrics.wait_for_series('{__name__="environment_v"}', 1)
    # VictoriaMetrics keeps both raw samples until it deduplicates; the point is the same.
    assert {(t, v) for s in series for t, v in zip(s["timestamps"], s["values"], strict=True)} == {
        (TS_NS // 10**6, 2.5)
    }


def test_wrong_path_on_the_real_server_is_rejected(
    victoria_metrics: VictoriaMetrics, context: SinkContext
) -> None:
    outcome = send_one(config(victoria_metrics.url + "/no/such/prefix"), context)
    assert outcome.kind == "rejected"
    assert 400 <= outcome.status < 500


def test_real_server_requiring_auth_answers_unauthorized_without_leaking_the_token(
    start_victoria_metrics: StartVictoriaMetrics, context: SinkContext, token_file: Path
) -> None:
    vm = start_victoria_metrics("-httpAuth.username=pilog", "-httpAuth.password=other")
    outcome = send_one(config(vm.url, token_file=token_file), context)
    assert outcome.kind == "unauthorized"
    assert TOKEN not in outcome.detail


def test_basic_auth_is_what_a_real_server_with_http_auth_takes(
    start_victoria_metrics: StartVictoriaMetrics, context: SinkContext, tmp_path: Path
) -> None:
    vm = start_victoria_metrics("-httpAuth.username=pilog", f"-httpAuth.password={TOKEN}")
    credentials = tmp_path / "vm-auth"
    credentials.write_text(f"pilog:{TOKEN}\n")
    assert send_one(config(vm.url, token_file=credentials), context).kind == "unauthorized"
    assert send_one(config(vm.url, token_file=credentials, auth="basic"), context).kind == "ack"


def test_basic_auth_without_a_colon_in_the_token_is_a_config_error(
    context: SinkContext, token_file: Path
) -> None:
    with pytest.raises(ConfigError, match="username:password"):
        open_influx(config("http://127.0.0.1:9", token_file=token_file, auth="basic"), context)


def test_stopped_server_means_retry(
    victoria_metrics: VictoriaMetrics, context: SinkContext, token_file: Path
) -> None:
    victoria_metrics.stop()
    outcome = send_one(config(victoria_metrics.url, token_file=token_file), context)
    assert outcome.kind == "retry"
    assert "network error" in outcome.detail
    assert TOKEN not in outcome.detail


NOTE = "pilog_note"


def expected_name(text: str) -> str:
    """What a name becomes on the server: its newlines are spaces."""
    return text.replace("\n", " ").replace("\r", " ")


nonempty = st.text(min_size=1, max_size=10)
numbers = st.one_of(
    # Milli-units: VictoriaMetrics stores decimals and rounds tiny magnitudes to zero.
    st.integers(min_value=-(10**12), max_value=10**12).map(lambda n: n / 1000),
    st.integers(min_value=-(2**53), max_value=2**53),
)
server_readings = st.lists(
    st.tuples(
        nonempty,
        nonempty,
        st.dictionaries(nonempty, numbers, min_size=1, max_size=3),
        st.text(max_size=10),
    ),
    min_size=1,
    max_size=5,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(server_readings)
def test_arbitrary_names_and_strings_are_parsed_by_the_real_server(
    victoria_metrics: VictoriaMetrics,
    context: SinkContext,
    spec: list[tuple[str, str, dict[str, Value], str]],
) -> None:
    # Every example writes under its own device id, so the server need not be reset.
    device_id = uuid.uuid4().hex
    ctx = SinkContext(device_id, context.epoch_hex, context.data_dir)
    batch: list[Event] = []
    expected: dict[tuple[str, str, int], float] = {}
    for seq, (sensor, stype, vals, note) in enumerate(spec):
        keys = [expected_name(k) for k in vals]
        assume(len(set(keys)) == len(keys) and NOTE not in keys)  # one series per field
        ts_ns = TS_NS + seq * 10**6  # each reading its own millisecond
        # The string field comes first: a badly quoted string would eat the numbers after it.
        values = {NOTE: note, **vals}
        batch.append(event(seq, values, sensor=sensor, sensor_type=stype, ts_ns=ts_ns))
        measurement = expected_name(stype)
        measurement = "\\" + measurement if measurement.startswith("#") else measurement
        for key, value in vals.items():
            # VictoriaMetrics keeps the backslash of an escape it does not know, such as `\\"`.
            field_key = expected_name(key).replace('"', '\\"')
            name = f"{measurement}_{field_key}"
            expected[name, expected_name(sensor), ts_ns // 10**6] = float(value)
    assert send_one(config(victoria_metrics.url), ctx, batch).kind == "ack"

    # The string's own series is left out: VictoriaMetrics reads strings as numbers, best effort.
    match = f'{{device="{device_id}",__name__!~".*_{NOTE}"}}'
    series = victoria_metrics.wait_for_series(match, len({(n, s) for n, s, _ in expected}))
    got = {
        (s["metric"]["__name__"], s["metric"]["sensor"], t): v
        for s in series
        for t, v in zip(s["timestamps"], s["values"], strict=True)
    }
    assert set(got) == set(expected)
    for point, value in expected.items():
        # VictoriaMetrics stores a value as a decimal of about 15 digits, not as the float.
        assert math.isclose(got[point], value, rel_tol=1e-12), point
