"""One typed snapshot for `pilog status` and `/metrics`: it crosses the control socket as
msgspec and comes back as the same types, and the metrics page shows its numbers."""

from __future__ import annotations

import socket
from pathlib import Path

from pilog.control import (
    ControlServer,
    ErrorAnswer,
    Request,
    RetryAnswer,
    RetryRequest,
    StatusRequest,
    query,
)
from pilog.log.writer import SYNC_SECONDS_BUCKETS
from pilog.metrics import render_snapshot
from pilog.runstate import (
    ClockView,
    ConsumerView,
    DriverView,
    DurabilityView,
    RunSnapshot,
    StorageView,
    WriterView,
)

WALL_NS = 1_800_000_000_000_000_000


def sample() -> RunSnapshot:
    paused = ConsumerView(
        name="sink:keep",
        next_seq=None,
        position=3,
        lag_events=40,
        oldest_ns=WALL_NS - 90 * 10**9,
        state="paused",
        paused_reason="endpoint",
        last_ok_ns=None,
        last_error="HTTP 404: not found",
        last_error_ns=WALL_NS - 10**9,
        failing_since_ns=WALL_NS - 60 * 10**9,
        recovered_ns=None,
        retry_at_ns=WALL_NS + 300 * 10**9,
        attempts=2,
        retries=7,
        delivered=0,
        requests=12,
        dead_letters=0,
        gaps=0,
        extra={},
    )
    return RunSnapshot(
        pid=1234,
        started_ns=WALL_NS - 10**12,
        wall_ns=WALL_NS,
        writer=WriterView(
            42,
            42,
            0.0,
            False,
            False,
            None,
            43,
            4096,
            5,
            0.01,
            [5] + [0] * (len(SYNC_SECONDS_BUCKETS) - 1),
            8192,
            1 << 30,
        ),
        durability=DurabilityView(
            "interval",
            100,
            "the default",
            StorageView("sd", "mmcblk0", True),
            "",
            "a power cut loses at most 100 ms",
        ),
        drivers=[DriverView("air", "synthetic", "running", 43, 0, 0, "", 0.0)],
        consumers=[paused],
        clock=ClockView(0, None, None),
        repairs=0,
        gaps=0,
    )


def test_the_snapshot_crosses_the_control_socket_as_the_same_types(tmp_path: Path) -> None:
    snap = sample()
    asked: list[Request] = []

    def answer(request: Request) -> RunSnapshot | RetryAnswer | ErrorAnswer:
        asked.append(request)
        if isinstance(request, StatusRequest):
            return snap
        if request.sink == "nope":
            return ErrorAnswer("no sink named 'nope'")
        return RetryAnswer(woken=["keep"], sinks=["keep"])

    server = ControlServer(tmp_path / "control.sock", answer)
    try:
        assert query(tmp_path, StatusRequest(), RunSnapshot) == snap
        assert query(tmp_path, RetryRequest("keep"), RetryAnswer) == RetryAnswer(["keep"], ["keep"])
        assert query(tmp_path, RetryRequest("nope"), RetryAnswer) == ErrorAnswer(
            "no sink named 'nope'"
        )
    finally:
        server.close()
    assert asked == [StatusRequest(), RetryRequest("keep"), RetryRequest("nope")]
    assert query(tmp_path, StatusRequest(), RunSnapshot) is None  # nobody answers now


def test_metrics_show_the_numbers_of_the_snapshot() -> None:
    page = render_snapshot(sample())
    lines = set(page.splitlines())
    assert 'pilog_consumer_lag_events{consumer="sink:keep"} 40' in lines
    assert 'pilog_consumer_lag_seconds{consumer="sink:keep"} 90' in lines
    assert 'pilog_consumer_paused{consumer="sink:keep",reason="endpoint"} 1' in lines
    assert 'pilog_consumer_retries_total{consumer="sink:keep"} 7' in lines
    retry_at_s = (WALL_NS + 300 * 10**9) // 10**9
    assert (
        f'pilog_consumer_next_retry_timestamp_seconds{{consumer="sink:keep"}} {retry_at_s}' in lines
    )
    assert "pilog_durable_seq 42" in lines
    assert "pilog_appends_total 43" in lines
    assert 'pilog_driver_readings_total{sensor="air"} 43' in lines


def test_a_bad_request_is_answered_with_the_known_commands(tmp_path: Path) -> None:
    server = ControlServer(tmp_path / "control.sock", lambda r: RetryAnswer([], []))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(tmp_path / "control.sock"))
            s.sendall(b'{"cmd": "reboot"}\n')
            answer = s.makefile("rb").readline()
    finally:
        server.close()
    assert b"known commands: status, retry" in answer
