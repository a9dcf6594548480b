"""Engine.IO echo servers for benchmarks/engineio: ``python servers.py NAME PORT``.

Prints ``ready`` on stdout once listening on 127.0.0.1, then serves until killed. Every
server echoes each Engine.IO message back to its session, at path ``/engine.io/``, with the
peers' defaults (ping 25 s / 20 s, 1 MB payload limit, both transports, compression off for
WebSocket; polling compression only applies when the client sends Accept-Encoding, and the
load generator does not).
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

    async def echo(session: Any) -> None:
        send = session.send
        async for message in session:
            await send(message)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: vt.serve_engineio(
                echo, "127.0.0.1", port, backlog=8192, task_status=task_status))
            ready()

    trio.run(main)


def run_python_engineio(port: int, async_handlers: bool = True) -> None:
    import engineio  # type: ignore[import-untyped]
    from aiohttp import web

    # async_handlers=False: python-engineio's recommended fast configuration (the handler
    # runs in the reading task instead of a task per message); the default is True.
    eio = engineio.AsyncServer(async_mode="aiohttp", async_handlers=async_handlers)

    @eio.on("message")  # type: ignore[untyped-decorator]
    async def message(sid: str, data: Any) -> None:
        await eio.send(sid, data)

    async def main() -> None:
        app = web.Application()
        eio.attach(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=8192)
        await site.start()
        ready()
        await asyncio.Future()

    asyncio.run(main())


def run_floor(port: int) -> None:
    """Not an Engine.IO server: the floor under one. volleyio's callback WebSocket server
    (``MessageHandler``) sending the Engine.IO open packet on connect and echoing every
    ``4...`` message as it came -- no session, no ping timer, no packet decoding, no
    polling. Run it with ``--servers floor --scenarios ws``: what an Engine.IO server
    costs above it is its session and packet work (it serves WebSocket only)."""
    import trio

    import volleyio.trio as vt

    opened = '0{"sid":"floor","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'

    class Floor(vt.MessageHandler):
        def on_open(self, ws: vt.WebSocketConnection) -> None:
            ws.send_nowait(opened)

        def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
            if isinstance(message, str) and message.startswith("4"):
                ws.send_nowait(message)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: vt.serve({"/engine.io/": Floor()}, "127.0.0.1", port,
                                                             backlog=8192, task_status=task_status))
            ready()

    trio.run(main)


def node_env(pure_js: bool) -> dict[str, str]:
    """NODE_PATH for tests/js; ``pure_js`` makes ws skip its native add-ons (bufferutil,
    utf-8-validate), which it otherwise loads by itself when installed."""
    env = dict(os.environ, NODE_PATH=str(ROOT / "tests" / "js" / "node_modules"))
    env.pop("WS_NO_BUFFER_UTIL", None)
    env.pop("WS_NO_UTF_8_VALIDATE", None)
    if pure_js:
        env.update(WS_NO_BUFFER_UTIL="1", WS_NO_UTF_8_VALIDATE="1")
    return env


def run_node(port: int, pure_js: bool = False) -> None:
    env = node_env(pure_js)
    # exec: the benchmark measures this PID, so it must be node itself.
    os.execvpe("node", ["node", str(HERE / "node_server.js"), str(port)], env)


SERVERS = {
    "volleyio": run_volleyio,
    "python-engineio": run_python_engineio,
    "node-engine.io": run_node,
    # Peers' other configurations and our floor (see run.py's CONFIGS for the labels).
    "python-engineio-sync": lambda port: run_python_engineio(port, async_handlers=False),
    "node-engine.io-purejs": lambda port: run_node(port, pure_js=True),
    "floor": run_floor,
}

if __name__ == "__main__":
    SERVERS[sys.argv[1]](int(sys.argv[2]))
