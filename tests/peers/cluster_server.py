"""A volleyio Socket.IO server process in a Redis cluster, for tests/test_cluster_multiprocess.py
and benchmarks/cluster.

argv[1]: JSON {port, redisUrl, adapter: "streams"|"sharded", name, heartbeat_interval?,
heartbeat_timeout?}. Prints {"ready": port, "uid": ...}; then takes JSON commands on
stdin, one per line {id, cmd, ...}, and answers {id, result} or {id, error} on stdout
(the same commands as tests/js/cluster_node.js)."""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any

import trio

import volleyio.trio as vt


def mark(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bin": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [mark(v) for v in value]
    if isinstance(value, dict):
        return {k: mark(v) for k, v in value.items()}
    return value


async def main() -> None:
    config = json.loads(sys.argv[1])
    name = config.get("name", "py")
    options = {
        "heartbeat_interval": config.get("heartbeat_interval", 5.0),
        "heartbeat_timeout": config.get("heartbeat_timeout", 10.0),
        "max_reconnect_delay": config.get("max_reconnect_delay", 1.0),
    }
    adapter: vt.ClusterAdapter
    if config["adapter"] == "streams":
        adapter = vt.RedisStreamsAdapter(config["redisUrl"], **options)
    else:
        adapter = vt.ShardedRedisAdapter(config["redisUrl"], **options)
    sio = vt.SocketIOServer(adapter=adapter, cors_origins="*")

    @sio.on("connect")
    def connect(socket: vt.Socket, auth: Any) -> None:
        socket.data["server"] = name

    @sio.on("whoami")
    def whoami(socket: vt.Socket) -> str:
        return socket.id

    @sio.on("join")
    async def join(socket: vt.Socket, room: str) -> str:
        await socket.join(room)
        return socket.id

    @sio.on_server_side_emit("hello")
    def hello(value: Any) -> str:
        return f"{name}:{value}"

    async def emit_many(c: dict[str, Any]) -> bool:
        for i in range(c["count"]):
            await sio.emit(c["event"], c["sender"], i, to=c.get("to"))
        return True

    async def emit(c: dict[str, Any]) -> bool:
        await sio.emit(c["event"], *c.get("args", []), to=c.get("to"), local=bool(c.get("local")))
        return True

    async def fetch_sockets(c: dict[str, Any]) -> list[dict[str, Any]]:
        sockets = await sio.fetch_sockets(to=c.get("to"))
        return [{"id": s.id, "rooms": sorted(s.rooms), "data": s.data} for s in sockets]

    async def sockets_join(c: dict[str, Any]) -> bool:
        await sio.sockets_join(c["rooms"], to=c["to"])
        return True

    async def sockets_leave(c: dict[str, Any]) -> bool:
        await sio.sockets_leave(c["rooms"], to=c["to"])
        return True

    async def disconnect_sockets(c: dict[str, Any]) -> bool:
        await sio.disconnect_sockets(to=c["to"], close=bool(c.get("close")))
        return True

    async def server_side_emit_with_ack(c: dict[str, Any]) -> Any:
        return mark(await sio.server_side_emit_with_ack(c["event"], *c.get("args", [])))

    async def gather(c: dict[str, Any]) -> Any:
        answers = await sio.gather(c["event"], *c.get("args", []), to=c.get("to"), timeout=c.get("timeout", 5000) / 1000)
        return mark(list(answers.values()))

    async def rooms(c: dict[str, Any]) -> Any:
        socket = sio.get_socket(c["sid"])
        return sorted(socket.rooms) if socket is not None else None

    async def server_count(c: dict[str, Any]) -> int:
        return await sio.server_count()

    async def nodes(c: dict[str, Any]) -> list[str]:
        return sorted(adapter.core.nodes("/"))

    async def stats(c: dict[str, Any]) -> dict[str, Any]:
        return {**adapter.statistics(), "connected": adapter.connected}

    commands = {
        "emitMany": emit_many,
        "emit": emit,
        "fetchSockets": fetch_sockets,
        "socketsJoin": sockets_join,
        "socketsLeave": sockets_leave,
        "disconnectSockets": disconnect_sockets,
        "serverSideEmitWithAck": server_side_emit_with_ack,
        "gather": gather,
        "rooms": rooms,
        "serverCount": server_count,
        "nodes": nodes,
        "stats": stats,
    }
    stdout = trio.lowlevel.FdStream(os.dup(1))
    stdin = trio.lowlevel.FdStream(os.dup(0))
    write_lock = trio.Lock()

    async def out(obj: Any) -> None:
        async with write_lock:
            await stdout.send_all((json.dumps(obj) + "\n").encode())

    async def run_command(c: dict[str, Any]) -> None:
        try:
            await out({"id": c["id"], "result": await commands[c["cmd"]](c)})
        except Exception as exc:  # noqa: BLE001 - reported to the test
            await out({"id": c["id"], "error": f"{exc.__class__.__name__}: {exc}"})

    async with trio.open_nursery() as nursery:
        server = await nursery.start(sio.serve, "127.0.0.1", config["port"])
        await out({"ready": server.port, "uid": adapter.uid})
        buffer = b""
        while True:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    nursery.start_soon(run_command, json.loads(line))
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
