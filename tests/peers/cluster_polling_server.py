"""A volleyio Socket.IO server with ``cluster_polling=True`` for tests/test_cluster_polling.py
and benchmarks/cluster/polling.py.

argv[1]: JSON {port, redisUrl, name, ping_interval?, ping_timeout?}. Prints
{"ready": port, "uid": <node id>}; then answers JSON lines {id, cmd: "stats"} with
{id, result}. Events: ``up`` (i) checks that every socket's i arrive 0, 1, 2... and acks
i; ``down`` (n, window) emits n acked ``down`` events (i = 0..n-1, at most ``window``
unanswered) and acks {"errors": [...]} once all are answered; ``echo`` acks its args.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

import volleyio.trio as vt


async def main() -> None:
    config = json.loads(sys.argv[1])
    adapter = vt.RedisStreamsAdapter(config["redisUrl"], heartbeat_interval=2.0, heartbeat_timeout=5.0,
                                     max_reconnect_delay=1.0)
    sio = vt.SocketIOServer(
        adapter=adapter,
        cluster_polling=vt.ClusterPolling(forward_timeout=config.get("forward_timeout", 5.0)),
        ping_interval=config.get("ping_interval", 25.0),
        ping_timeout=config.get("ping_timeout", 20.0),
        cors_origins="*",
    )
    name = config.get("name", "py")

    @sio.on("connect")
    def connect(socket: vt.Socket, auth: Any) -> None:
        socket.data["next"] = 0
        socket.data["errors"] = []

    @sio.on("up")
    def up(socket: vt.Socket, i: int) -> int:
        if i != socket.data["next"]:
            socket.data["errors"].append(f"up {i} while expecting {socket.data['next']}")
        socket.data["next"] = i + 1
        return i

    @sio.on("upErrors")
    def up_errors(socket: vt.Socket) -> Any:
        return {"errors": socket.data["errors"], "next": socket.data["next"], "node": name}

    @sio.on("echo")
    def echo(socket: vt.Socket, *args: Any) -> Any:
        return list(args)

    @sio.on("down")
    async def down(socket: vt.Socket, n: int, window: int) -> Any:
        errors: list[str] = []
        sem = trio.Semaphore(window)

        async def one(i: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            try:
                answer = await socket.call("down", i)  # emitted before the parent goes on
                if answer != i:
                    errors.append(f"down ack {answer!r} for {i}")
            finally:
                sem.release()

        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    await sem.acquire()
                    await nursery.start(one, i)
        return {"errors": errors}

    async def commands(forwarder: Any) -> None:
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buffer = b""
        while True:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                c = json.loads(line)
                result = {**forwarder.stats, "sessions": sorted(sio.engineio.sessions), "relayed": sorted(forwarder.relayed)}
                print(json.dumps({"id": c["id"], "result": result}), flush=True)

    async with trio.open_nursery() as nursery:
        await nursery.start(sio.serve, "127.0.0.1", config["port"])
        forwarder = sio.engineio.forwarder
        assert forwarder is not None
        print(json.dumps({"ready": config["port"], "uid": forwarder.node}), flush=True)
        await commands(forwarder)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
