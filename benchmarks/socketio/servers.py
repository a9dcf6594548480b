"""Socket.IO servers for benchmarks/socketio: ``python servers.py NAME PORT``.

Prints ``ready`` on stdout once listening on 127.0.0.1, then serves until killed. Same
handlers everywhere (path ``/socket.io/``, namespace ``/``):

* on connect the client joins room ``"bench"``;
* ``"echo"`` answers its ack with its arguments;
* ``"bcast"`` emits ``"tick"`` with its argument to room ``"bench"`` (every client).

Peers' defaults otherwise (ping 25 s / 20 s, both transports, WebSocket compression off).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def ready() -> None:
    print("ready", flush=True)


def run_volleyio(port: int) -> None:
    import trio

    import volleyio.trio as vt

    sio = vt.SocketIOServer()

    @sio.on("connect")
    async def connect(socket: vt.Socket, auth: Any) -> None:
        await socket.join("bench")

    @sio.on("echo")
    async def echo(socket: vt.Socket, *args: Any) -> Any:
        return args  # a tuple: each element is one ack argument

    @sio.on("bcast")
    async def bcast(socket: vt.Socket, data: Any) -> None:
        await sio.emit("tick", data, to="bench")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: sio.serve("127.0.0.1", port, backlog=8192,
                                                              task_status=task_status))
            ready()

    trio.run(main)


def run_python_socketio(port: int) -> None:
    import socketio  # type: ignore[import-untyped]
    from aiohttp import web

    sio = socketio.AsyncServer(async_mode="aiohttp")

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: Any, auth: Any) -> None:
        await sio.enter_room(sid, "bench")

    @sio.on("echo")  # type: ignore[untyped-decorator]
    async def echo(sid: str, *args: Any) -> Any:
        return args  # a tuple: each element is one ack argument

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
        ready()
        await asyncio.Future()

    asyncio.run(main())


def run_node(port: int) -> None:
    env = dict(os.environ, NODE_PATH=str(ROOT / "tests" / "js" / "node_modules"))
    # exec: the benchmark measures this PID, so it must be node itself.
    os.execvpe("node", ["node", str(HERE / "node_server.js"), str(port)], env)


SERVERS = {
    "volleyio": run_volleyio,
    "python-socketio": run_python_socketio,
    "node-socket.io": run_node,
}

if __name__ == "__main__":
    SERVERS[sys.argv[1]](int(sys.argv[2]))
