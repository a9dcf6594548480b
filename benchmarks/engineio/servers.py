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


def run_python_engineio(port: int) -> None:
    import engineio  # type: ignore[import-untyped]
    from aiohttp import web

    eio = engineio.AsyncServer(async_mode="aiohttp")

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


def run_node(port: int) -> None:
    env = dict(os.environ, NODE_PATH=str(ROOT / "tests" / "js" / "node_modules"))
    # exec: the benchmark measures this PID, so it must be node itself.
    os.execvpe("node", ["node", str(HERE / "node_server.js"), str(port)], env)


SERVERS = {
    "volleyio": run_volleyio,
    "python-engineio": run_python_engineio,
    "node-engine.io": run_node,
}

if __name__ == "__main__":
    SERVERS[sys.argv[1]](int(sys.argv[2]))
