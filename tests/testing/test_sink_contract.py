"""The sink contract suite catches what it promises to: each test run against a sink broken
in the one way it checks fails, and passes against the real sink (tests/uploader/contract/).

Each broken sink is the http-json sink with one fault, named by "module:Class"; the suite
runs in a pytest subprocess (its own process: a hung sink thread dies with it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BROKEN_SINKS = """
import time
import msgspec
from pilog.uploader.sink import ACK, Outcome
from pilog.uploader.sinks.http_json.sink import HttpJsonSink


class AcksWithoutStoring(HttpJsonSink):
    def send(self, batch):
        return ACK


class RaisesWhenDown(HttpJsonSink):
    def send(self, batch):
        outcome = super().send(batch)
        if outcome.kind == "retry":
            raise ConnectionError(outcome.detail)
        return outcome


class NewIdsOnEverySend(HttpJsonSink):
    sends = 0

    def body(self, batch):
        NewIdsOnEverySend.sends += 1
        objects = self.objects(batch)
        return msgspec.json.encode([{**o, "id": f"{o['id']}-{self.sends}"} for o in objects])


class LeaksTheToken(HttpJsonSink):
    def send(self, batch):
        outcome = super().send(batch)
        return Outcome(outcome.kind, f"{outcome.detail} with {self._headers}", outcome.status)


class CloseWaitsForever(HttpJsonSink):
    def close(self):
        time.sleep(3600)


class SendsAfterClose(HttpJsonSink):
    def close(self):
        pass


class ProbeAlwaysAcks(HttpJsonSink):
    def probe(self, deadline):
        return ACK


class RoundsFloats(HttpJsonSink):
    def body(self, batch):
        objects = self.objects(batch)
        for o in objects:
            o["payload"] = {k: round(v, 6) if isinstance(v, float) else v
                            for k, v in o["payload"].items()}
        return msgspec.json.encode(objects)


class WaitsOnAHungEndpoint(HttpJsonSink):
    def send(self, batch):
        self._client.timeout = None
        return super().send(batch)
"""

SUITE = """
import sys
from pathlib import Path

sys.path[:0] = [{tests!r}, {uploader!r}, {here!r}]

from test_contract_http_json import TestHttpJsonContract


class TestBroken(TestHttpJsonContract):
    sink_type = "broken_sinks:{cls}"
    margin_s = 1.0
    stop_bound_s = 2.0
"""

TESTS = Path(__file__).resolve().parent.parent
# As tests/conftest.py does for the suite: every server here is on 127.0.0.1.
NO_PROXY_ENV = {
    k: v
    for k, v in os.environ.items()
    if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
}


@pytest.mark.parametrize(
    ("cls", "must_fail"),
    [
        ("AcksWithoutStoring", "test_ack_means_every_reading_of_the_batch_is_stored"),
        ("RaisesWhenDown", "test_an_unreachable_endpoint_is_retry_by_the_timeout"),
        ("NewIdsOnEverySend", "test_a_batch_sent_again_after_its_ack_is_stored_once"),
        ("NewIdsOnEverySend", "test_a_batch_partly_stored_before_a_failure_ends_stored_once"),
        ("LeaksTheToken", "test_no_secret_in_outcomes_logs_or_exceptions"),
        ("CloseWaitsForever", "test_close_returns_in_bounded_time_while_the_endpoint_is_down"),
        ("SendsAfterClose", "test_send_after_close_raises"),
        ("ProbeAlwaysAcks", "test_probe_acks_a_healthy_endpoint_and_not_an_unreachable_one"),
        ("RoundsFloats", "test_non_ascii_names_and_edge_floats_come_back_exactly"),
        ("WaitsOnAHungEndpoint", "test_a_hung_endpoint_is_retry_by_the_timeout"),
        ("WaitsOnAHungEndpoint", "test_the_same_instance_delivers_again_once_the_endpoint"),
    ],
)
def test_each_contract_test_fails_against_a_sink_broken_its_way(
    tmp_path: Path, cls: str, must_fail: str
) -> None:
    (tmp_path / "broken_sinks.py").write_text(BROKEN_SINKS)
    suite = tmp_path / "test_broken_contract.py"
    uploader = TESTS / "uploader" / "contract"
    suite.write_text(
        textwrap.dedent(SUITE).format(
            tests=str(TESTS), uploader=str(uploader), here=str(tmp_path), cls=cls
        )
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(suite),
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            f"TestBroken and {must_fail}",
            "--rootdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=NO_PROXY_ENV,
        timeout=300,
        check=False,
    )
    assert "failed" in run.stdout.splitlines()[-1], run.stdout[-3000:]
    assert " passed" not in run.stdout.splitlines()[-1], run.stdout[-3000:]


def test_the_suite_passes_against_the_sink_it_wraps(tmp_path: Path) -> None:
    (tmp_path / "broken_sinks.py").write_text(
        BROKEN_SINKS + "\n\nclass Unbroken(HttpJsonSink):\n    pass\n"
    )
    suite = tmp_path / "test_broken_contract.py"
    uploader = TESTS / "uploader" / "contract"
    suite.write_text(
        textwrap.dedent(SUITE).format(
            tests=str(TESTS), uploader=str(uploader), here=str(tmp_path), cls="Unbroken"
        )
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(suite),
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "TestBroken",
            "--rootdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=NO_PROXY_ENV,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:]
