"""A real mosquitto on 127.0.0.1 for the mqtt sink's and driver's tests; a subscriber to read back.

Debian's `mosquitto` package provides both the broker (/usr/sbin, off a normal user's PATH) and
`mosquitto_passwd`; tests skip with a reason when either is missing. Nothing here sleeps for a
fixed time: starting and stopping are polled against `WAIT_S`, a bound and never a measurement.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

WAIT_S = 60.0
POLL_S = 0.01
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def missing(path: str, package: str) -> str | None:
    """A skip reason when the executable `path` is absent, else None."""
    if os.access(path, os.X_OK):
        return None
    return f"{path} not found (apt-get install {package})"


def requires(path: str, package: str) -> pytest.MarkDecorator:
    """Skip the test, saying what to install, when the executable `path` is absent."""
    reason = missing(path, package)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """One mosquitto process listening on 127.0.0.1:`port`, configured by `conf`."""

    conf: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=out)
        deadline = time.monotonic() + WAIT_S
        while not accepts(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.tail()}")
            time.sleep(POLL_S)

    def stop(self) -> None:
        """SIGTERM (after SIGCONT, in case it was paused) and wait for the exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(WAIT_S)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(WAIT_S)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts and buffers, but nothing is read or answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def unread_bytes(self) -> int:
        """Bytes that clients sent and the (paused) broker has not read, from /proc/net/tcp."""
        total = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if int(local.split(":")[1], 16) == self.port and state == "01":  # ESTABLISHED
                total += int(queues.split(":")[1], 16)
        return total

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self) -> str:
        return self.log_text()[-2000:]


def write_conf(
    directory: Path,
    port: int,
    *,
    password_file: Path | None = None,
    tls: tuple[Path, Path] | None = None,
    max_packet_size: int | None = None,
) -> Path:
    """A mosquitto.conf: one listener on 127.0.0.1, no persistence, log to stderr."""
    lines = [
        f"listener {port} 127.0.0.1",
        "persistence false",
        "log_dest stderr",
        "log_type all",
        # As root, mosquitto would switch to user `mosquitto`, who cannot read tmp_path.
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
    ]
    if password_file is None:
        lines.append("allow_anonymous true")
    else:
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    if tls is not None:
        cert, key = tls
        lines += [f"certfile {cert}", f"keyfile {key}"]
    if max_packet_size is not None:
        lines.append(f"max_packet_size {max_packet_size}")
    conf = directory / f"mosquitto-{port}.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start_broker(
    directory: Path,
    *,
    password_file: Path | None = None,
    tls: tuple[Path, Path] | None = None,
    max_packet_size: int | None = None,
) -> Broker:
    port = free_port()
    conf = write_conf(
        directory, port, password_file=password_file, tls=tls, max_packet_size=max_packet_size
    )
    broker = Broker(conf, port, directory / f"mosquitto-{port}.log")
    broker.start()
    return broker


def password_file(directory: Path, username: str, password: str) -> Path:
    path = directory / "passwd"
    subprocess.run(
        [MOSQUITTO_PASSWD, "-b", "-c", str(path), username, password],
        check=True,
        capture_output=True,
    )
    return path


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a throwaway CA and a cert for 127.0.0.1 it signed."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    # Python 3.13's default context is X.509-strict: the leaf needs its issuer's key id.
    ext.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    for command in (
        f"req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=pilog-test-ca "
        f"-keyout {ca_key} -out {ca}",
        f"req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout {key} -out {csr}",
        f"x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 1 "
        f"-extfile {ext} -out {cert}",
    ):
        # split() is safe: neither these arguments nor pytest's tmp_path hold spaces.
        subprocess.run([OPENSSL, *command.split()], check=True, capture_output=True)
    return ca, cert, key


class Subscriber:
    """A paho client subscribed to `topic` at QoS 2 (so each message keeps its publish QoS)."""

    def __init__(self, port: int, topic: str = "pilog/#") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._changed = threading.Condition()
        self._subscribed = False
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pilog-test-subscriber")
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(topic, qos=2)
        self._client.loop_start()
        self._wait(lambda: self._subscribed, "SUBACK")

    def wait_for(self, count: int) -> list[mqtt.MQTTMessage]:
        """The first `count` messages, once that many have arrived."""
        self._wait(lambda: len(self.messages) >= count, f"{count} messages")
        with self._changed:
            return list(self.messages[:count])

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # No client↔subscriber cycle left: the client, and its sockets, go with the last ref.
        self._client.on_message = None
        self._client.on_subscribe = None

    def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, WAIT_S):
                raise TimeoutError(f"subscriber: no {what} within {WAIT_S}s")

    def _on_subscribe(self, client: object, userdata: object, mid: int, *rest: object) -> None:
        with self._changed:
            self._subscribed = True
            self._changed.notify_all()

    def _on_message(self, client: object, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()


def publish(
    port: int,
    messages: list[tuple[str, bytes]],
    *,
    retain: bool = False,
    ca: Path | None = None,
    **auth: str,
) -> None:
    """Publish `messages` (topic, payload) at QoS 1 in order; return once the broker has them all.

    `auth` is `username=` and `password=` for a broker with a password file; `ca` the CA file
    to verify a TLS listener with.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pilog-test-publisher")
    if auth:
        client.username_pw_set(auth["username"], auth["password"])
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [
            client.publish(topic, payload, qos=1, retain=retain) for topic, payload in messages
        ]
        for info in infos:
            info.wait_for_publish(WAIT_S)
            assert info.is_published(), "broker did not acknowledge a test message"
    finally:
        client.disconnect()
        client.loop_stop()
