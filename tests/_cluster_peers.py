"""Node socket.io servers in a Redis cluster (tests/js/cluster_node.js), driven over
stdin/stdout JSON lines."""

from __future__ import annotations

import itertools
import json
import subprocess
from typing import Any

import trio

from _trio_support import JS_DIR, free_port, node_path, require_peer


def node_cluster_available() -> bool:
    modules = JS_DIR / "node_modules"
    return node_path() is not None and all(
        (modules / name).is_dir()
        for name in ("socket.io", "redis", "@socket.io/redis-streams-adapter", "@socket.io/redis-adapter")
    )


class NodePeer:
    """One ``node cluster_node.js`` process; ``await peer.call("fetchSockets")``."""

    def __init__(self, redis_url: str, adapter: str, name: str = "node", cluster: list[str] | None = None) -> None:
        require_peer(node_cluster_available(), "node with tests/js/node_modules (socket.io, redis adapters)")
        self.port = free_port()
        self.config = {"port": self.port, "redisUrl": redis_url, "adapter": adapter, "name": name}
        if cluster:
            self.config["cluster"] = cluster
        self.process: trio.Process | None = None
        self.uid = ""
        self._ids = itertools.count()
        self._buffer = b""
        self._answers: dict[int, Any] = {}
        self._lock = trio.Lock()

    async def start(self, nursery: trio.Nursery) -> NodePeer:
        node = node_path()
        assert node is not None
        self.process = await trio.lowlevel.open_process(
            [node, "cluster_node.js", json.dumps(self.config)],
            cwd=str(JS_DIR),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        with trio.fail_after(20):
            ready = await self._line()
        assert ready.get("ready") == self.port, ready
        self.uid = ready["uid"]
        return self

    async def _line(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise RuntimeError("the Node peer exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    async def call(self, cmd: str, **args: Any) -> Any:
        assert self.process is not None and self.process.stdin is not None
        async with self._lock:
            request_id = next(self._ids)
            await self.process.stdin.send_all((json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n").encode())
            with trio.fail_after(20):
                answer = await self._line()
        assert answer["id"] == request_id, answer
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> None:
        if self.process is not None:
            self.kill()
            with trio.move_on_after(5):
                await self.process.wait()
