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


def run_volleyio(port: int, recovery: bool = False) -> None:
    import trio

    import volleyio.trio as vt

    sio = vt.SocketIOServer(connection_state_recovery=recovery)

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


def run_floor(port: int) -> None:
    """Not a Socket.IO server: the floor under one. volleyio's callback WebSocket server
    answering the load generator's ``42<id>[...]`` with ``43<id>[...]`` through
    ``json.loads``/``json.dumps`` -- no Engine.IO session, no validation, no namespaces,
    no rooms. Run it with ``--servers floor --scenarios ack`` to see what the full stack
    costs on top (it serves WebSocket only and ignores broadcasts)."""
    import json

    import trio

    import volleyio.trio as vt

    loads, dumps = json.loads, json.dumps
    opened = '0{"sid":"floor","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'

    class Floor(vt.MessageHandler):
        def on_open(self, ws: vt.WebSocketConnection) -> None:
            ws.send_nowait(opened)

        def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
            if not isinstance(message, str):
                return
            if message.startswith("42"):
                end = 2
                while message[end].isdigit():
                    end += 1
                args = loads(message[end:])
                if end > 2:
                    ws.send_nowait("43" + message[2:end] + dumps(args[1:], separators=(",", ":")))
            elif message == "40":
                ws.send_nowait('40{"sid":"floor-socket"}')

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: vt.serve({"/socket.io/": Floor()}, "127.0.0.1", port,
                                                             backlog=8192, task_status=task_status))
            ready()

    trio.run(main)


def run_node(port: int) -> None:
    env = dict(os.environ, NODE_PATH=str(ROOT / "tests" / "js" / "node_modules"))
    # exec: the benchmark measures this PID, so it must be node itself.
    os.execvpe("node", ["node", str(HERE / "node_server.js"), str(port)], env)


SERVERS = {
    "volleyio": run_volleyio,
    # The same with connection state recovery on: every broadcast gets an offset and is kept.
    "volleyio-recovery": lambda port: run_volleyio(port, recovery=True),
    "python-socketio": run_python_socketio,
    "node-socket.io": run_node,
    "floor": run_floor,
}

if __name__ == "__main__":
    SERVERS[sys.argv[1]](int(sys.argv[2]))
