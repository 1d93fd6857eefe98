"""The pms5003 driver: framing against published vectors, and a real pty carrying the stream."""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import CORPUS

from pilog import runtime as runtime_mod
from pilog.config import parse_config
from pilog.datadir import EventLog
from pilog.drivers.base import Payload, PollingDriver
from pilog.drivers.pms5003.driver import to_payload
from pilog.drivers.pms5003.frame import CommandAck, FrameScanner, Measurement
from pilog.events import DriverFailed, Reading
from pilog.history import History
from pilog.runtime import Runtime
from pilog.testing.clock import FakeClock
from pilog.testing.drivers import open_driver
from pilog.testing.pty import SerialPty

WAIT_S = 30.0  # a bound for waiting on the pty, never a measured result
DECODED_KEYS = (
    ("pm1_0_ugm3", "pm1_0_atm"),
    ("pm2_5_ugm3", "pm2_5_atm"),
    ("pm10_ugm3", "pm10_atm"),
    ("pm1_0_cf1_ugm3", "pm1_0_cf1"),
    ("pm2_5_cf1_ugm3", "pm2_5_cf1"),
    ("pm10_cf1_ugm3", "pm10_cf1"),
    ("n0_3um_per_0_1l", "n0_3_per_0_1L"),
    ("n0_5um_per_0_1l", "n0_5_per_0_1L"),
    ("n1_0um_per_0_1l", "n1_0_per_0_1L"),
    ("n2_5um_per_0_1l", "n2_5_per_0_1L"),
    ("n5_0um_per_0_1l", "n5_0_per_0_1L"),
    ("n10um_per_0_1l", "n10_per_0_1L"),
)
WARMUP = "all-zero frame while the fan warms up"


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"corpus file {path} is absent (see ../shared/corpus/SOURCES.md)")
    return path


def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(corpus_file("pms5003_vectors.json").read_text())
    return data


def frame(words: list[int], length: int = 28, *, bad_checksum: bool = False) -> bytes:
    """A frame built here, independently of the driver: header, words, 16-bit byte sum."""
    body = b"BM" + length.to_bytes(2, "big") + b"".join(w.to_bytes(2, "big") for w in words)
    check = (sum(body) + (1 if bad_checksum else 0)) & 0xFFFF
    return body + check.to_bytes(2, "big")


GOOD_WORDS = [5, 13, 22, 5, 13, 22, 765, 252, 29, 15, 6, 6, 0x9700]  # PyPMS' known-good frame
ZERO_WORDS = [0] * 12 + [0x9700]


def expected_payload(decoded: dict[str, int]) -> Payload:
    return {ours: decoded[theirs] for ours, theirs in DECODED_KEYS}


def read_until(driver: PollingDriver, count: int) -> list[Payload]:
    """Read until `count` readings came (or the wait bound passed)."""
    out: list[Payload] = []
    deadline = time.monotonic() + WAIT_S
    while len(out) < count and time.monotonic() < deadline:
        out.extend(driver.poll())
    return out


def poll_until_error(driver: PollingDriver) -> None:
    """Poll until the driver raises; fail if it has not within the wait bound."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert driver.poll() == []
    pytest.fail(f"no error within {WAIT_S} s")


# -- framing ---------------------------------------------------------------------------------


def test_published_frames_decode_or_fail_as_their_verdict_says() -> None:
    seen = set()
    for vec in vectors()["frames"]:
        frames, problems = FrameScanner().feed(bytes.fromhex(vec["hex"]))
        verdict = vec["verdict"]
        seen.add(verdict)
        if verdict in ("ok", "warming_up_or_zero"):
            assert problems == [], vec["id"]
            assert len(frames) == 1, vec["id"]
            m = frames[0]
            assert isinstance(m, Measurement)
            assert to_payload(m) == expected_payload(vec["decoded"]), vec["id"]
            assert m.version == vec["decoded"]["version"]
            assert m.error_code == vec["decoded"]["error_code"]
            assert m.all_zero == (verdict == "warming_up_or_zero")
        elif verdict == "bad_checksum":
            assert (frames, problems) == ([], ["bad checksum"]), vec["id"]
        elif verdict == "bad_length_field":
            assert (frames, problems) == ([], ["bad frame length field"]), vec["id"]
        elif verdict == "short":
            assert (frames, problems) == ([], []), vec["id"]  # waits for the rest
        elif verdict == "command_ack":
            assert frames == [CommandAck(0xE4, 0x00)], vec["id"]
        else:
            pytest.fail(f"unknown verdict {verdict}")
    assert seen >= {"ok", "bad_checksum", "bad_length_field", "short", "command_ack"}


def test_stream_yields_the_checksum_valid_frames_however_it_is_split() -> None:
    data = corpus_file("pms5003_stream.bin").read_bytes()
    expected = vectors()["stream"]["expected_frames_in_order"]
    for chunk in (len(data), 1, 3, 31, 32, 33):
        scanner = FrameScanner()
        frames: list[object] = []
        problems: list[str] = []
        for i in range(0, len(data), chunk):
            f, p = scanner.feed(data[i : i + chunk])
            frames += f
            problems += p
        measurements = [f for f in frames if isinstance(f, Measurement)]
        assert [to_payload(m) for m in measurements] == [
            expected_payload(e["decoded"]) for e in expected
        ], chunk
        assert [f for f in frames if isinstance(f, CommandAck)] == [CommandAck(0xE4, 0)]
        assert scanner.leading_bytes_dropped == 19  # the tail the port opened into
        # One broken start inside the garbage, one bad frame; the garbage is one stretch.
        assert problems == ["garbage between frames", "bad checksum", "bad checksum"], chunk


# -- the driver on a real pty ----------------------------------------------------------------


@pytest.fixture
def pty() -> Any:
    with SerialPty() as p:
        yield p


def test_corpus_stream_through_a_pty(pty: SerialPty) -> None:
    data = corpus_file("pms5003_stream.bin").read_bytes()
    expected = vectors()["stream"]["expected_frames_in_order"]
    # The first two all-zero frames arrive during warm-up; the three after real data are air.
    wanted = [expected_payload(e["decoded"]) for e in expected[2:]]
    with open_driver("pms5003", {"port": pty.path}, clock=FakeClock()) as driver:
        pty.write(data)
        got = read_until(driver, len(wanted))
        assert got == wanted
        assert driver.rejected[WARMUP] == 2
        assert driver.rejected["bad checksum"] == 2
        assert driver.rejected["garbage between frames"] == 1
        # The stream ended in a frame cut after 17 bytes; the next frame must still decode.
        pty.write(frame(GOOD_WORDS))
        assert read_until(driver, 1)[0]["pm2_5_ugm3"] == 13
        assert driver.rejected["bad checksum"] == 3


def test_frame_arriving_in_pieces_is_decoded_once_complete(pty: SerialPty) -> None:
    good = frame(GOOD_WORDS)
    with open_driver("pms5003", {"port": pty.path}, clock=FakeClock()) as driver:
        for i in range(0, 30, 6):
            pty.write(good[i : i + 6])
            assert driver.poll() == []
        pty.write(good[30:])
        (reading,) = read_until(driver, 1)
        assert reading["pm1_0_ugm3"] == 5
        assert reading["pm10_cf1_ugm3"] == 22
        assert reading["n0_3um_per_0_1l"] == 765
        assert reading["n10um_per_0_1l"] == 6
        assert sum(driver.rejected.values()) == 0


def test_garbage_bad_checksum_and_bad_length_are_rejected_not_read(pty: SerialPty) -> None:
    good = frame(GOOD_WORDS)
    with open_driver("pms5003", {"port": pty.path}, clock=FakeClock()) as driver:
        pty.write(good)
        assert len(read_until(driver, 1)) == 1
        pty.write(bytes(range(0x50, 0x90)))  # no 0x42 0x4D in here
        pty.write(frame(GOOD_WORDS, bad_checksum=True))
        pty.write(frame(GOOD_WORDS[:1], length=4)[:4] + b"\x00" * 20)  # length 4, wrong sum
        pty.write(b"BM\x00\x1d" + b"\x00" * 28)  # length field 29: no such frame
        pty.write(b"\x00" * 64 + good)
        got = read_until(driver, 1)
        assert len(got) == 1
        assert got[0]["pm2_5_cf1_ugm3"] == 13
        assert driver.rejected["garbage between frames"] >= 1
        assert driver.rejected["bad checksum"] >= 2
        assert driver.rejected["bad frame length field"] == 1


def test_all_zero_frames_are_warm_up_until_data_or_30_s(pty: SerialPty) -> None:
    clock = FakeClock()
    with open_driver("pms5003", {"port": pty.path}, clock=clock) as driver:
        pty.write(frame(ZERO_WORDS) + frame(GOOD_WORDS))
        (reading,) = read_until(driver, 1)
        assert reading["pm2_5_ugm3"] == 13
        assert driver.rejected[WARMUP] == 1
    with open_driver("pms5003", {"port": pty.path}, clock=clock) as driver:
        pty.write(frame(ZERO_WORDS))
        pty.write(frame(GOOD_WORDS, bad_checksum=True))  # a marker: its reject shows both came
        deadline = time.monotonic() + WAIT_S
        while not driver.rejected["bad checksum"] and time.monotonic() < deadline:
            assert driver.poll() == []
        assert driver.rejected[WARMUP] == 1
        clock.advance(30 * 10**9)  # the datasheet's 30 s of fan spin-up have passed
        pty.write(frame(ZERO_WORDS))
        (reading,) = read_until(driver, 1)
        assert set(reading.values()) == {0}  # clean air, recorded


def test_unplugged_port_raises_so_the_runtime_reconnects(tmp_path: Path) -> None:
    with SerialPty(link=tmp_path / "by-id" / "pms") as pty:
        with open_driver("pms5003", {"port": pty.path}, clock=FakeClock()) as driver:
            pty.write(frame(GOOD_WORDS))
            assert len(read_until(driver, 1)) == 1
            pty.unplug()
            with pytest.raises(OSError, match="lost"):
                poll_until_error(driver)
        pty.replug()
        with open_driver("pms5003", {"port": pty.path}, clock=FakeClock()) as driver:
            pty.write(frame(GOOD_WORDS))
            assert read_until(driver, 1)[0]["pm10_ugm3"] == 22


def test_runtime_reopens_the_port_after_unplug_and_replug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_mod, "RESTART_BACKOFF_MIN_S", 0.02)
    pty = SerialPty(link=tmp_path / "by-id" / "pms")
    config = parse_config(
        tomllib.loads(
            f"""
            device_id = "t"
            data_dir = "{tmp_path / "data"}"
            [log]
            fsync = "never"
            [[sensor]]
            name = "air"
            driver = "pms5003"
            port = "{pty.path}"
            """
        ),
        "test.toml",
        {},
    )
    clock = FakeClock()
    events = EventLog(config, clock=clock)
    rt = Runtime(config, events, clock)
    first, second = list(GOOD_WORDS), list(GOOD_WORDS)
    second[4] = 99  # PM2.5 atmospheric: tells the frames after the re-plug apart

    async def feed_until(data: bytes | None, done: Any) -> None:
        """Write `data` as an active-mode sensor would (again and again) until `done()`."""
        deadline = time.monotonic() + WAIT_S
        while not done() and time.monotonic() < deadline:
            if data is not None:
                pty.write(data)
            await asyncio.sleep(0.02)

    async def main() -> None:
        task = asyncio.create_task(rt.run())
        await feed_until(frame(first), lambda: "air" in rt.health and rt.health["air"].readings)
        health = rt.health["air"]
        pty.unplug()
        await feed_until(None, lambda: health.failures >= 2)  # lost, then absent on reopen
        before = health.readings
        pty.replug()
        await feed_until(frame(second), lambda: health.readings > before)
        rt.stop()
        await task

    try:
        asyncio.run(main())
    finally:
        events.close()
        pty.close()
    bodies = [e.body for e in History(config.data_dir).events(0)]
    pm25 = [b.values["pm2_5_ugm3"] for b in bodies if isinstance(b, Reading)]
    assert pm25[0] == 13
    assert pm25[-1] == 99
    errors = [b.error for b in bodies if isinstance(b, DriverFailed)]
    assert any("lost" in e for e in errors), errors
