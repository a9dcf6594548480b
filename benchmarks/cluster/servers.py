"""Socket.IO servers in a Redis cluster, for benchmarks/cluster: ``python servers.py NAME PORT``
with the Redis URL in ``$BENCH_REDIS_URL``.

Prints ``ready`` once listening on 127.0.0.1, then serves until killed. The handlers of
benchmarks/socketio (join room ``"bench"`` on connect, ``"echo"`` acks its arguments,
``"bcast"`` emits ``"tick"`` to room ``"bench"``), with the server in a cluster:

* ``volleyio-streams`` / ``volleyio-sharded``: ``volleyio.trio.SocketIOServer`` with
  ``RedisStreamsAdapter`` / ``ShardedRedisAdapter``;
* ``node-streams`` / ``node-sharded``: Node socket.io with ``@socket.io/redis-streams-adapter``
  / ``@socket.io/redis-adapter``'s sharded adapter (``node_server.js``);
* ``python-socketio``: ``AsyncServer(client_manager=AsyncRedisManager(url))`` on aiohttp.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")


def ready() -> None:
    print("ready", flush=True)


def run_volleyio(port: int, kind: str) -> None:
    import trio

    import volleyio.trio as vt

    adapter = vt.RedisStreamsAdapter(URL) if kind == "streams" else vt.ShardedRedisAdapter(URL)
    sio = vt.SocketIOServer(adapter=adapter)

    @sio.on("connect")
    async def connect(socket: vt.Socket, auth: Any) -> None:
        await socket.join("bench")

    @sio.on("echo")
    async def echo(socket: vt.Socket, *args: Any) -> Any:
        return args

    @sio.on("bcast")
    async def bcast(socket: vt.Socket, data: Any) -> None:
        await sio.emit("tick", data, to="bench")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: sio.serve("127.0.0.1", port, backlog=8192, task_status=task_status))
            ready()

    trio.run(main)


def run_python_socketio(port: int) -> None:
    import socketio  # type: ignore[import-untyped]
    from aiohttp import web

    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=socketio.AsyncRedisManager(URL))

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: Any, auth: Any) -> None:
        await sio.enter_room(sid, "bench")

    @sio.on("echo")  # type: ignore[untyped-decorator]
    async def echo(sid: str, *args: Any) -> Any:
        return args

    @sio.on("bcast")  # type: ignore[untyped-decorator]
    async def bcast(sid: str, data: Any) -> None:
        await sio.emit("tick", data, room="bench")

    async def main() -> None:
        app = web.Application()
        sio.attach(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=8192)
        await site.start()
        await asyncio.sleep(0.5)  # the manager's listener subscribes
        ready()
        await asyncio.Future()

    asyncio.run(main())


def run_node(port: int, kind: str) -> None:
    env = dict(os.environ, NODE_PATH=str(ROOT / "tests" / "js" / "node_modules"))
    os.execvpe("node", ["node", str(HERE / "node_server.js"), str(port), URL, kind], env)


if __name__ == "__main__":
    name, port_text = sys.argv[1], sys.argv[2]
    port = int(port_text)
    if name.startswith("volleyio-"):
        run_volleyio(port, name.split("-", 1)[1])
    elif name.startswith("node-"):
        run_node(port, name.split("-", 1)[1])
    elif name == "python-socketio":
        run_python_socketio(port)
    else:
        raise SystemExit(f"unknown server {name}")
