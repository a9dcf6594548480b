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


def run_python_socketio(port: int, async_handlers: bool = True) -> None:
    import socketio  # type: ignore[import-untyped]
    from aiohttp import web

    # async_handlers=False: python-socketio's recommended fast configuration (events are
    # handled in the reading task instead of a task each); the default is True.
    sio = socketio.AsyncServer(async_mode="aiohttp", async_handlers=async_handlers)

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


def _volleyio_sio() -> Any:
    import volleyio.trio as vt

    sio = vt.SocketIOServer()

    @sio.on("connect")
    async def connect(socket: vt.Socket, auth: Any) -> None:
        await socket.join("bench")

    @sio.on("echo")
    async def echo(socket: vt.Socket, *args: Any) -> Any:
        return args

    @sio.on("bcast")
    async def bcast(socket: vt.Socket, data: Any) -> None:
        await sio.emit("tick", data, to="bench")

    return sio


def run_volleyio_asgi(port: int) -> None:
    """volleyio.asgi.ASGIApp (in front of a one-route Starlette app, as it would be used)
    under hypercorn's trio worker (``hypercorn.trio.serve``, what ``--worker-class trio``
    runs), access log off, one process."""
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from volleyio.asgi import ASGIApp

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = ASGIApp(_volleyio_sio(), Starlette(routes=[Route("/hello", hello)]))
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.backlog = 8192
    config.websocket_max_message_size = 1_000_000

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
            ready()

    trio.run(main)


def run_floor_asgi(port: int) -> None:
    """Not a Socket.IO server: the floor of hypercorn's trio worker. A bare ASGI app doing
    what ``floor`` does (``42<id>[...]`` answered ``43<id>[...]`` through json), so that
    ``volleyio-asgi`` minus this is what volleyio's stack adds over ASGI."""
    import json

    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    loads, dumps = json.loads, json.dumps
    opened = '0{"sid":"floor","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": opened})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            text = message.get("text")
            if not text:
                continue
            if text.startswith("42"):
                end = 2
                while text[end].isdigit():
                    end += 1
                args = loads(text[end:])
                if end > 2:
                    reply = "43" + text[2:end] + dumps(args[1:], separators=(",", ":"))
                    await send({"type": "websocket.send", "text": reply})
            elif text == "40":
                await send({"type": "websocket.send", "text": '40{"sid":"floor-socket"}'})

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.backlog = 8192

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
            ready()

    trio.run(main)


def run_python_socketio_asgi(port: int) -> None:
    """python-socketio's ASGIApp (around the same one-route Starlette app) under uvicorn
    with its defaults (asyncio; httptools/uvloop when installed), access log off."""
    import socketio  # type: ignore[import-untyped]
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    sio = socketio.AsyncServer(async_mode="asgi")

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: Any, auth: Any) -> None:
        await sio.enter_room(sid, "bench")

    @sio.on("echo")  # type: ignore[untyped-decorator]
    async def echo(sid: str, *args: Any) -> Any:
        return args

    @sio.on("bcast")  # type: ignore[untyped-decorator]
    async def bcast(sid: str, data: Any) -> None:
        await sio.emit("tick", data, room="bench")

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = socketio.ASGIApp(sio, Starlette(routes=[Route("/hello", hello)]))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_level="warning", backlog=8192)
    server = uvicorn.Server(config)

    async def main() -> None:
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        ready()
        await serving

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


def run_node(port: int, pure_js: bool = False) -> None:
    """``pure_js``: ws skips its native add-ons (bufferutil, utf-8-validate), which it
    otherwise loads by itself when installed (node_server.js checks they load)."""
    env = dict(os.environ, NODE_PATH=str(ROOT / "tests" / "js" / "node_modules"))
    env.pop("WS_NO_BUFFER_UTIL", None)
    env.pop("WS_NO_UTF_8_VALIDATE", None)
    if pure_js:
        env.update(WS_NO_BUFFER_UTIL="1", WS_NO_UTF_8_VALIDATE="1")
    # exec: the benchmark measures this PID, so it must be node itself.
    os.execvpe("node", ["node", str(HERE / "node_server.js"), str(port)], env)


SERVERS = {
    "volleyio": run_volleyio,
    # The same with connection state recovery on: every broadcast gets an offset and is kept.
    "volleyio-recovery": lambda port: run_volleyio(port, recovery=True),
    "python-socketio": run_python_socketio,
    "node-socket.io": run_node,
    "floor": run_floor,
    # Peers' other configurations (see run.py's CONFIGS for the labels).
    "python-socketio-sync": lambda port: run_python_socketio(port, async_handlers=False),
    "node-socket.io-purejs": lambda port: run_node(port, pure_js=True),
    "volleyio-asgi": run_volleyio_asgi,
    "floor-asgi": run_floor_asgi,
    "python-socketio-asgi": run_python_socketio_asgi,
}

if __name__ == "__main__":
    SERVERS[sys.argv[1]](int(sys.argv[2]))
