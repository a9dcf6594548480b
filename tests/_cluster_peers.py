"""Processes of a cluster test, driven over stdin/stdout JSON lines: Node socket.io servers
(tests/js/cluster_node.js), volleyio servers (tests/peers/cluster_server.py), official
socket.io-client sockets (tests/js/cluster_clients.js) and python-socketio clients
(tests/peers/pys_cluster_clients.py)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from _trio_support import JS_DIR, free_port, node_path, require_peer

PEERS_DIR = Path(__file__).parent / "peers"


def node_cluster_available() -> bool:
    modules = JS_DIR / "node_modules"
    return node_path() is not None and all(
        (modules / name).is_dir()
        for name in ("socket.io", "socket.io-client", "redis", "@socket.io/redis-streams-adapter", "@socket.io/redis-adapter")
    )


class LinePeer:
    """A child process answering ``{id, cmd, ...}`` lines with ``{id, result|error}``."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.cwd = cwd
        self.env = env or {}
        self.process: trio.Process | None = None
        self.ready: dict[str, Any] = {}
        self._ids = itertools.count()
        self._buffer = b""
        self._lock = trio.Lock()

    async def start(self) -> LinePeer:
        self.process = await trio.lowlevel.open_process(
            self.argv, cwd=str(self.cwd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        with trio.fail_after(30):
            self.ready = await self._line()
        return self

    async def _line(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise RuntimeError(f"{self.argv[:2]} exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    async def call(self, cmd: str, **args: Any) -> Any:
        assert self.process is not None and self.process.stdin is not None
        async with self._lock:
            request_id = next(self._ids)
            await self.process.stdin.send_all((json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n").encode())
            with trio.fail_after(30):
                answer = await self._line()
        assert answer["id"] == request_id, answer
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def sigkill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is not None:
            self.sigkill()
            with trio.move_on_after(5):
                await self.process.wait()


class ServerPeer(LinePeer):
    def __init__(self, argv: list[str], cwd: Path, port: int, env: dict[str, str] | None = None) -> None:
        super().__init__(argv, cwd, env)
        self.port = port

    @property
    def uid(self) -> str:
        return str(self.ready.get("uid", ""))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def NodePeer(redis_url: str, adapter: str, name: str = "node", cluster: list[str] | None = None) -> ServerPeer:  # noqa: N802
    """A Node socket.io server with the Node adapter of that kind."""
    require_peer(node_cluster_available(), "node with tests/js/node_modules (socket.io, redis adapters)")
    node = node_path()
    assert node is not None
    port = free_port()
    config: dict[str, Any] = {"port": port, "redisUrl": redis_url, "adapter": adapter, "name": name}
    if cluster:
        config["cluster"] = cluster
    return ServerPeer([node, "cluster_node.js", json.dumps(config)], JS_DIR, port)


def PythonPeer(redis_url: str, adapter: str, name: str, impl: str = "compiled", **options: Any) -> ServerPeer:  # noqa: N802
    """A volleyio server process (tests/peers/cluster_server.py); ``impl`` "python" runs it
    on the pure-Python speedups."""
    port = free_port()
    config = {"port": port, "redisUrl": redis_url, "adapter": adapter, "name": name, **options}
    env = {"VOLLEYIO_NO_EXTENSIONS": "1"} if impl == "python" else {}
    return ServerPeer([sys.executable, str(PEERS_DIR / "cluster_server.py"), json.dumps(config)], PEERS_DIR, port, env)


def NodeClients() -> LinePeer:  # noqa: N802
    require_peer(node_cluster_available(), "node with tests/js/node_modules (socket.io-client)")
    node = node_path()
    assert node is not None
    return LinePeer([node, "cluster_clients.js"], JS_DIR)


def PythonSocketIOClients() -> LinePeer:  # noqa: N802
    try:
        import socketio  # noqa: F401
    except ImportError:
        require_peer(False, "python-socketio (the interop extra)")
    return LinePeer([sys.executable, str(PEERS_DIR / "pys_cluster_clients.py")], PEERS_DIR)
