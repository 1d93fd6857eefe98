"""A real NATS JetStream cluster on 127.0.0.1 for tests and benchmarks (Debian's `nats-server`).

`NatsCluster.start(tmp_dir, nodes=3)` runs `nodes` servers clustered over routes, each with its
own client, route and monitoring port, `server_name` and store directory; it returns once every
node says `/healthz` ok (JetStream meta leader elected). Then: `add_stream`, `stream_leader`,
`kill(node)` (SIGKILL), `stop(node)`, `restart(*nodes)` (same ports and stores), `stored_ids`
(every `Nats-Msg-Id` in a stream, read back in stream order) and `close()` (kills them all).
Authorization is one `authorization { ... }` block given verbatim, the same on every node.
`missing()` says why the cluster cannot run here (no server binary, no nats-py), else None.

The admin calls use nats-py, each in its own short-lived event loop: the cluster object is
driven from plain synchronous test code.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
)
WAIT_S = 60.0  # a bound for waiting on a server, never a measured result
POLL_S = 0.05
CLUSTER_NAME = "pilog-test"

T = TypeVar("T")


def missing() -> str | None:
    """Why a JetStream cluster cannot be started here, or None when it can."""
    if NATS_SERVER is None:
        return "nats-server is not installed (Debian package `nats-server`, scripts/servers)"
    try:
        import nats  # noqa: F401, PLC0415
    except ImportError:
        return "nats-py is not installed (pip install 'pilog[nats]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NatsNode:
    """One server of the cluster: its name, ports, store and (while running) process."""

    name: str
    port: int
    route_port: int
    http_port: int
    store_dir: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class NatsCluster:
    """A running cluster; see the module doc."""

    nodes: list[NatsNode]
    authorization: str = ""
    connect_options: dict[str, Any] = field(default_factory=dict)

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        directory: Path,
        *,
        nodes: int = 3,
        authorization: str = "",
        connect_options: dict[str, Any] | None = None,
    ) -> NatsCluster:
        """Start `nodes` clustered servers (1: a single JetStream server) and wait for them."""
        if reason := missing():
            raise RuntimeError(reason)
        made = []
        for i in range(1, nodes + 1):
            name = f"n{i}"
            made.append(
                NatsNode(
                    name=name,
                    port=free_port(),
                    route_port=free_port(),
                    http_port=free_port(),
                    store_dir=directory / name / "store",
                    config_path=directory / name / "nats.conf",
                    log_path=directory / name / "nats.log",
                )
            )
        cluster = cls(made, authorization, dict(connect_options or {}))
        for node in made:
            node.store_dir.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(cluster._config(node))
        try:
            for node in made:
                cluster._spawn(node)
            cluster.wait_healthy()
        except BaseException:
            cluster.close()
            raise
        return cluster

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node)

    def kill(self, node: NatsNode) -> None:
        """SIGKILL: no goodbye to the cluster, nothing flushed beyond what the store has."""
        if node.process is not None:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGKILL)
            node.process.wait(WAIT_S)
            node.process = None

    def stop(self, node: NatsNode) -> None:
        """SIGTERM, then wait: a clean shutdown (leadership handed over)."""
        if node.process is not None:
            if node.process.poll() is None:
                node.process.terminate()
            node.process.wait(WAIT_S)
            node.process = None

    def restart(self, *nodes: NatsNode) -> None:
        """Start stopped or killed nodes again with their ports and stores (all of them when
        none is named); wait until each is healthy (a lone node waits for a quorum)."""
        nodes = nodes or tuple(self.nodes)
        for node in nodes:
            if not node.running:
                self._spawn(node)
        self.wait_healthy(nodes)

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def wait_healthy(self, nodes: Sequence[NatsNode] | None = None) -> None:
        deadline = time.monotonic() + WAIT_S
        for node in nodes or self.nodes:
            url = f"http://127.0.0.1:{node.http_port}/healthz"
            while True:
                if not node.running:
                    raise RuntimeError(f"nats-server {node.name} exited: {self._tail(node)}")
                try:
                    if httpx.get(url, timeout=2.0, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"nats-server {node.name} not healthy within {WAIT_S}s: {self._tail(node)}"
                    )
                time.sleep(POLL_S)

    # -- JetStream admin -----------------------------------------------------------------

    def add_stream(self, name: str, subjects: list[str], **config: Any) -> None:
        """Create a stream (replicas = the cluster's size unless told), retrying while the
        cluster is still electing leaders."""
        from nats.js.api import StreamConfig  # noqa: PLC0415

        config.setdefault("num_replicas", len(self.nodes))
        stream = StreamConfig(name=name, subjects=subjects, **config)

        async def add(js: Any) -> None:
            await js.add_stream(stream)

        self._retrying(add, f"add stream {name}")

    def update_stream(self, name: str, **config: Any) -> None:
        from nats.js.api import StreamConfig  # noqa: PLC0415

        async def update(js: Any) -> None:
            info = await js.stream_info(name)
            current: StreamConfig = info.config
            await js.update_stream(current.evolve(**config))

        self._retrying(update, f"update stream {name}")

    def stream_leader(self, name: str) -> NatsNode:
        """The node leading `name`'s Raft group now."""

        async def leader(js: Any) -> str:
            info = await js.stream_info(name)
            if info.cluster is None or not info.cluster.leader:
                raise RuntimeError(f"stream {name} has no leader yet")
            return str(info.cluster.leader)

        return self.node(self._retrying(leader, f"leader of stream {name}"))

    def message_count(self, name: str) -> int:
        """How many messages stream `name` holds now."""

        async def count(js: Any) -> int:
            info = await js.stream_info(name)
            return int(info.state.messages)

        return self._retrying(count, f"count of stream {name}")

    def stored(self, name: str) -> list[tuple[str, dict[str, str], bytes]]:
        """(subject, headers, data) of every message of stream `name`, in stream order."""

        async def read(js: Any) -> list[tuple[str, dict[str, str], bytes]]:
            info = await js.stream_info(name)
            last = info.state.last_seq
            out: list[tuple[str, dict[str, str], bytes]] = []
            if info.state.messages == 0:
                return out
            # An ordered consumer over the whole stream: msg-get one by one is too slow.
            sub = await js.subscribe(">", stream=name, ordered_consumer=True, pending_msgs_limit=-1)
            try:
                while True:
                    msg = await sub.next_msg(timeout=WAIT_S)
                    out.append((msg.subject, dict(msg.headers or {}), msg.data or b""))
                    if msg.metadata.sequence.stream >= last:
                        break
            finally:
                await sub.unsubscribe()
            return out

        return self._retrying(read, f"read stream {name}")

    def stored_ids(self, name: str) -> list[str]:
        """Every message's `Nats-Msg-Id` in stream `name`, in stream order (duplicates kept)."""
        return [h.get("Nats-Msg-Id", "") for _, h, _ in self.stored(name)]

    def _retrying(self, call: Callable[[Any], Awaitable[T]], what: str) -> T:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                return asyncio.run(self._with_js(call))
            except Exception as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what}: {e!r} for {WAIT_S}s") from e
                time.sleep(POLL_S * 4)

    async def _with_js(self, call: Callable[[Any], Awaitable[T]]) -> T:
        import nats  # noqa: PLC0415

        urls = [n.url for n in self.nodes if n.running]
        nc = await nats.connect(
            urls,
            allow_reconnect=False,
            connect_timeout=2,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.05,
            **self.connect_options,
        )
        try:
            return await call(nc.jetstream(timeout=5.0))
        finally:
            await nc.close()

    # -- internals -----------------------------------------------------------------------

    def _spawn(self, node: NatsNode) -> None:
        log = node.log_path.open("ab")
        try:
            node.process = subprocess.Popen(
                [str(NATS_SERVER), "-c", str(node.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

    def _config(self, node: NatsNode) -> str:
        lines = [
            f"server_name: {node.name}",
            f"listen: 127.0.0.1:{node.port}",
            f"http: 127.0.0.1:{node.http_port}",
            "jetstream {",
            f'  store_dir: "{node.store_dir}"',
            "  max_memory_store: 64MB",
            "  max_file_store: 1GB",
            "}",
        ]
        if len(self.nodes) > 1:
            routes = ", ".join(
                f"nats-route://127.0.0.1:{n.route_port}" for n in self.nodes if n is not node
            )
            lines += [
                "cluster {",
                f"  name: {CLUSTER_NAME}",
                f"  listen: 127.0.0.1:{node.route_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        if self.authorization:
            lines.append(f"authorization {{\n{self.authorization}\n}}")
        return "\n".join(lines) + "\n"

    def _tail(self, node: NatsNode) -> str:
        try:
            return " | ".join(node.log_path.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"
