"""ASGI applications for tests/test_asgi.py: a Starlette app and a Quart-trio app, each
with its own routes and volleyio mounted in front (``volleyio.asgi.ASGIApp``) serving
the Socket.IO scenario contract (tests/js/sio_ref_server.js, built by
``test_socketio_interop.build_server``) and a plain WebSocket echo route.

``hypercorn --worker-class trio 'asgi_apps:starlette_app()'`` (run from tests/peers, with
tests/ on PYTHONPATH) serves one; the tests also build fresh ones in-process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from test_socketio_interop import Record, build_server  # noqa: E402

from volleyio.asgi import ASGIApp, ASGIWebSocket  # noqa: E402

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>volleyio ASGI page</title><link rel="icon" href="data:,">
<script src="/socket.io/socket.io.js"></script></head>
<body><h1>Page served by FRAMEWORK</h1><p id="status">connecting...</p>
<script>
const status = document.getElementById('status');
const socket = io({ transports: ['polling', 'websocket'], reconnection: false });
socket.on('connect', () => {
  status.textContent = 'connected as ' + socket.id + ' over ' + socket.io.engine.transport.name;
  socket.emit('echo', 'hello from the page', (reply) => {
    const done = () => {
      status.textContent = 'connected over ' + socket.io.engine.transport.name + '; echo: ' + reply;
      window.__sioResult = { ok: true, reply, transport: socket.io.engine.transport.name, id: socket.id };
    };
    if (socket.io.engine.transport.name === 'websocket') done();
    else socket.io.engine.once('upgrade', done);
  });
});
socket.on('connect_error', (err) => { window.__sioResult = { ok: false, error: String(err) }; });
</script></body></html>
"""


async def echo(ws: ASGIWebSocket) -> None:
    async for message in ws:
        await ws.send(message)


def make_starlette(record: Record, events: list[str]) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, PlainTextResponse
    from starlette.routing import Route
    from contextlib import asynccontextmanager

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello from starlette")

    async def page(request: Any) -> HTMLResponse:
        return HTMLResponse(PAGE.replace(b"FRAMEWORK", b"Starlette"))

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        events.append("starlette startup")
        yield
        events.append("starlette shutdown")

    web = Starlette(routes=[Route("/hello", hello), Route("/page", page)], lifespan=lifespan)
    return ASGIApp(build_server(record), web, websockets={"/ws/echo": echo})


def make_quart(record: Record, events: list[str]) -> Any:
    from quart_trio import QuartTrio

    web = QuartTrio(__name__)

    @web.route("/hello")
    async def hello() -> str:
        return "hello from quart"

    @web.route("/page")
    async def page() -> tuple[bytes, int, dict[str, str]]:
        return PAGE.replace(b"FRAMEWORK", b"Quart-trio"), 200, {"content-type": "text/html; charset=utf-8"}

    @web.before_serving
    async def startup() -> None:
        events.append("quart startup")

    @web.after_serving
    async def shutdown() -> None:
        events.append("quart shutdown")

    return ASGIApp(build_server(record), web, websockets={"/ws/echo": echo})


FRAMEWORKS = {"starlette": make_starlette, "quart": make_quart}


def starlette_app() -> Any:
    """A fresh Starlette app with volleyio in front (``hypercorn ... 'asgi_apps:starlette_app()'``:
    hypercorn evaluates the expression; importing this module needs neither framework)."""
    return make_starlette(Record(), [])


def quart_app() -> Any:
    return make_quart(Record(), [])
