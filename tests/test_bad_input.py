"""Bad input end to end: a malformed config, a corrupt segment in the middle, a sink answering
garbage, a serial port spewing noise. Each gives one clear message, pilog goes on where it can,
and nothing acknowledged is lost.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from helpers import (
    assert_one_sentence_error,
    http_sink_toml,
    pilog,
    run_pilog,
    status_json,
    tail_json,
    wait_for_seq,
    wait_until,
    write_config,
)

from pilog.events import Reading, event_id
from pilog.history import History
from pilog.testing.pty import SerialPty
from pilog.testing.receiver import Receiver, garbage


def reading_ids(data: Path, to_seq: int | None = None) -> set[str]:
    """Ids of the readings of the log, up to `to_seq` (read no further: it may be damaged)."""
    history = History(data)
    header = history.header()
    assert header is not None
    ids = set()
    for e in history.events():
        if to_seq is not None and e.seq > to_seq:
            break
        if isinstance(e.body, Reading):
            ids.add(event_id(header.device_id, header.epoch_hex, e.seq))
    return ids


def sink_state(config: Path, name: str = "sink:keep") -> dict[str, object]:
    state = status_json("-c", config)
    (consumer,) = [c for c in state["consumers"] if c["name"] == name]
    live: dict[str, object] = consumer.get("live") or {}  # what the running pilog says
    return {**consumer, **live}


# -- a malformed config ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("[log\nfsync = 1\n", ["line 3"]),
        (
            '[[sink]]\nname = "k"\ntype = "http-json"\nurl = "http://127.0.0.1:1/x"\n'
            "batchmax = 3\n",
            ["sink[0]", "batchmax"],
        ),
        ('[log]\nfsync_interval_ms = "fast"\n', ["log.fsync_interval_ms"]),
        ('[[sensor]]\nname = "a"\ndriver = "synthetic"\ninterval_ms = -5\n', ["sensor[0]"]),
    ],
    ids=["toml-syntax", "unknown-sink-key", "wrong-type", "out-of-range"],
)
def test_a_malformed_config_is_one_error_naming_file_and_key_and_creates_nothing(
    tmp_path: Path, body: str, names: list[str]
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "pilog.toml"
    config.write_text(f'device_id = "x"\ndata_dir = "{data}"\n{body}')
    result = pilog("run", "-c", config)
    assert result.returncode == 2, result
    line = assert_one_sentence_error(result)
    assert "pilog.toml" in line, line
    for name in names:
        assert name in line, line
    assert not data.exists()


# -- a corrupt segment in the middle --------------------------------------------------------


def test_damage_in_a_sealed_segment_is_loud_and_never_skipped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = {"segment_bytes": "4KiB", "max_bytes": "1MiB", "fsync_interval_ms": 10}
    plain = write_config(tmp_path / "plain.toml", data, log=log)
    with run_pilog(plain) as p:
        p.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")
        wait_until(lambda: len(list((data / "log").glob("*.seg"))) >= 4, "four segments")
        assert p.stop() == 0, p.stderr.text()
    segments = sorted((data / "log").glob("*.seg"))
    victim = segments[1]  # sealed, with sealed segments on both sides
    base = int(victim.name.split(".")[0])
    after = int(segments[2].name.split(".")[0])
    raw = bytearray(victim.read_bytes())
    offset = len(raw) // 2
    raw[offset] ^= 0xFF
    victim.write_bytes(bytes(raw))

    verify = pilog("verify", "-c", plain)
    assert verify.returncode == 1, verify
    out = verify.stdout + verify.stderr
    assert victim.name in out, out
    assert "Traceback" not in out, out

    # pilog starts (only the newest segment is scanned on open); a sink that must read
    # through the damage uploads what precedes it, then says it is stuck, naming the segment.
    before = reading_ids(data, base - 1)
    with Receiver() as rx:
        config = write_config(
            tmp_path / "sink.toml", data, log=log, sensors=[], extra=http_sink_toml(rx.url)
        )
        with run_pilog(config) as p:
            p.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")
            rx.wait_for(lambda r: before <= r.ids(), timeout=60)

            def stuck() -> dict[str, object] | None:
                state = sink_state(config)
                error = str(state.get("last_error") or "")
                return state if state.get("state") == "stuck" and victim.name in error else None

            state = wait_until(stuck, "the sink to report it is stuck at the damage", 60, 0.2)
            p.stderr.wait_for(
                lambda line: (
                    "sink:keep is stuck" in line and victim.name in line and "pilog repair" in line
                ),
                "one log line naming the damaged segment",
            )
            assert p.alive()
            assert p.stop() == 0, p.stderr.text()
        got = {int(i.rsplit(":", 1)[1]) for i in rx.ids()}
    # Nothing after the damaged segment was delivered: the sink did not skip past it.
    assert not {s for s in got if s >= after}, (sorted(got)[-5:], after, state)
    assert status_json("-c", config)["cursors"]["sink:keep"] <= after


# -- a sink answering garbage ---------------------------------------------------------------


def test_a_sink_answering_garbage_retries_and_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Receiver() as rx:
        rx.always(garbage())
        config = write_config(
            tmp_path / "pilog.toml",
            data,
            log={"fsync_interval_ms": 10},
            extra=http_sink_toml(rx.url),
        )
        with run_pilog(config) as p:
            p.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")

            def retrying() -> dict[str, object] | None:
                state = sink_state(config)
                live = state.get("state") == "retrying" and state.get("last_error")
                return state if live else None

            state = wait_until(retrying, "the sink retrying with an error", 60, 0.2)
            grown = wait_for_seq(data, int(state.get("next_seq") or 0) + 100)
            assert p.alive()
            assert rx.ids() == set()
            assert sink_state(config).get("next_seq") in (None, 0)
            rx.clear_modes()
            rx.wait_for(lambda r: reading_ids(data, grown) <= r.ids(), timeout=60)
            assert p.stop() == 0, p.stderr.text()
            errors = [
                line for line in p.stderr.lines if "garbage" in line.lower() or "WARN" in line
            ]
        # Stopping does not wait for the sink: what it had not sent is owed, past its cursor.
        cursor = status_json("-c", config)["cursors"]["sink:keep"]
        assert reading_ids(data, cursor - 1) <= rx.ids() <= reading_ids(data)
        assert cursor > grown
        assert rx.duplicates == 0
        assert rx.validation_errors == []
    assert len([e for e in errors if "sink:keep" in e]) <= 3, errors


# -- a serial port spewing noise ------------------------------------------------------------


def test_a_serial_port_spewing_noise_gives_only_its_valid_lines(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(4)
    good = [f'{{"temp_c": {20 + i / 10:.1f}, "n": {i}}}' for i in range(50)]
    with SerialPty() as pty:
        sensor = {"name": "bench", "driver": "serial_lines", "port": pty.path, "format": "json"}
        config = write_config(
            tmp_path / "pilog.toml", data, log={"fsync_interval_ms": 10}, sensors=[sensor]
        )
        with run_pilog(config) as p:
            p.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")
            wait_until(
                lambda: any(
                    e["type"] == "driver_started" for e in tail_json("-c", config, "--from", "0")
                ),
                "the driver to start",
            )
            stream = bytearray()
            for line in good:
                noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
                stream += noise.replace(b"\n", b"").replace(b"\r", b"") + b"\n"
                stream += line.encode() + b"\r\n"
            writer = threading.Thread(target=pty.write, args=(bytes(stream),), daemon=True)
            writer.start()

            def readings() -> list[dict[str, object]] | None:
                got = [e for e in tail_json("-c", config, "--from", "0") if e["type"] == "reading"]
                return got if len(got) >= len(good) else None

            wait_until(readings, "every valid line as a reading", 60, 0.2)
            writer.join(60)
            assert p.alive()
            assert p.stop() == 0, p.stderr.text()
    events = tail_json("-c", config, "--from", "0")
    got = [e["payload"] for e in events if e["type"] == "reading"]
    # Only the valid lines, each once, in order (noise can never parse as JSON of this shape).
    assert [v["n"] for v in got] == list(range(len(good))), got
    rejected = [line for line in p.stderr.lines if "rejected input" in line]
    # Logged once per reason, not once per bad line.
    assert rejected, p.stderr.text()
    assert len(rejected) < len(good) // 2, rejected
    assert len(rejected) == len(set(rejected)), rejected
