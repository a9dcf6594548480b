"""Demo server: one page, a Socket.IO chat room with live counters, and a plain WebSocket door.

Everything the page needs is served by the same process:

* ``GET /`` - the page; ``GET /static/socket.io.min.js`` - the Socket.IO browser client
  shipped inside the package (with its licence notice next to it);
* ``/socket.io/`` - Socket.IO v5 over Engine.IO v4: the page starts on long-polling and
  upgrades to WebSocket when the network lets it, and stays on long-polling when not;
* ``/ws`` - the same chat room over plain WebSocket with JSON messages
  (``{"type": "chat", "name": ..., "text": ...}``), for WebSocket-only clients;
* ``/favicon.ico`` - 204 (no icon; the page declares an empty one).

A chat line from either door reaches everyone. The counters, once a second, go only to
clients that ask: Socket.IO clients that connect with ``auth={"stats": true}`` (the page
does), ``/ws`` clients that connect to ``/ws?stats=1``.
"""

from __future__ import annotations

import json
import signal
from urllib.parse import parse_qs
import threading
import sys
import time
from importlib import resources
from typing import Any

import trio

from .. import __version__, _speedups
from ..trio import (
    ConnectionClosed,
    Request,
    Response,
    Socket,
    SocketIOServer,
    WebSocketConnection,
    WebSocketServer,
    broadcast,
)

MAX_NAME_LENGTH = 32
MAX_TEXT_LENGTH = 1_000
STATS_INTERVAL = 1.0
STATS_ROOM = "stats"

#: Files under ``static/`` the server hands out, with their content type.
STATIC_FILES = {
    "socket.io.min.js": "text/javascript; charset=utf-8",
    "socket.io.min.js.LICENSE.txt": "text/plain; charset=utf-8",
}


def _resource(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def validate_chat(message: object) -> tuple[str, str] | str:
    """The cleaned (name, text) of a chat message, or the reason it was refused."""
    if not isinstance(message, dict):
        return 'expected {"name": ..., "text": ...}'
    name, text = message.get("name"), message.get("text")
    if not isinstance(name, str) or not isinstance(text, str):
        return "name and text must be strings"
    name, text = name.strip()[:MAX_NAME_LENGTH] or "anonymous", text.strip()
    if not text:
        return "empty message"
    if len(text) > MAX_TEXT_LENGTH:
        return f"message longer than {MAX_TEXT_LENGTH} characters"
    return name, text


def _parse_ws_chat(raw: str | bytes) -> tuple[str, str] | str:
    if not isinstance(raw, str):
        return "send chat messages as JSON text"
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return "not JSON"
    if not isinstance(message, dict) or message.get("type") != "chat":
        return 'expected {"type": "chat", "name": ..., "text": ...}'
    return validate_chat(message)


def _cpu_seconds() -> float:
    # User + system CPU of this process, on every platform (``resource`` is Unix-only).
    return time.process_time()


class Demo:
    """The demo's wiring and its whole state: who is connected and what has been counted.

    ``messages_in`` counts chat lines received (accepted or refused), ``messages_out``
    chat lines delivered (one per receiver); the counters themselves are not counted.
    """

    def __init__(self) -> None:
        self.sio = SocketIOServer()
        self.ws_members: set[WebSocketConnection] = set()
        #: The /ws clients that asked for the counters (``/ws?stats=1``).
        self.ws_stats: set[WebSocketConnection] = set()
        self.messages_in = 0
        self.messages_out = 0
        self.started = time.monotonic()
        self.server: WebSocketServer | None = None
        self._cpu_percent = 0.0
        self._page = _resource("page.html")
        self._static = {name: (_resource(f"static/{name}"), kind) for name, kind in STATIC_FILES.items()}
        self._register()

    @property
    def port(self) -> int:
        assert self.server is not None, "the demo is not serving yet"
        return self.server.port

    # ------------------------------------------------------------------ chat

    async def publish(self, name: str, text: str, via: str) -> None:
        """Send a chat line to every client of both doors; each door encodes it once."""
        payload = {"name": name, "text": text, "at": time.time(), "via": via}
        self.messages_out += self.sio_client_count()
        await self.sio.emit("chat", payload)
        self.messages_out += broadcast(self.ws_members, json.dumps({"type": "chat", **payload}, separators=(",", ":")))

    def _register(self) -> None:
        sio = self.sio

        @sio.on("connect")
        async def on_connect(socket: Socket, auth: Any) -> None:
            if isinstance(auth, dict) and auth.get("stats"):
                await socket.join(STATS_ROOM)
            await socket.emit(
                "welcome", {"version": __version__, "speedups": _speedups.IMPLEMENTATION, "id": socket.id}
            )

        @sio.on("chat")
        async def on_chat(socket: Socket, message: Any = None, *_: Any) -> dict[str, Any]:
            self.messages_in += 1
            parsed = validate_chat(message)
            if isinstance(parsed, str):
                return {"error": parsed}
            await self.publish(*parsed, via=socket.transport)
            return {"ok": True}

    async def ws_chat(self, ws: WebSocketConnection) -> None:
        """The plain WebSocket door (``/ws``)."""
        self.ws_members.add(ws)
        if parse_qs(ws.request.query).get("stats", ["0"])[-1] in ("1", "true"):
            self.ws_stats.add(ws)
        try:
            await ws.send(json.dumps({"type": "welcome", "version": __version__, "transport": "websocket"}))
            async for raw in ws:
                self.messages_in += 1
                parsed = _parse_ws_chat(raw)
                if isinstance(parsed, str):
                    await ws.send(json.dumps({"type": "error", "reason": parsed}))
                    continue
                await self.publish(*parsed, via="ws")
        except ConnectionClosed:
            pass
        finally:
            self.ws_members.discard(ws)
            self.ws_stats.discard(ws)

    # ------------------------------------------------------------------ counters

    def sio_client_count(self) -> int:
        return len(self.sio.of("/").sockets)

    def transport_counts(self) -> dict[str, int]:
        counts = {"polling": 0, "websocket": 0}
        for socket in self.sio.of("/").sockets.values():
            counts[socket.transport] = counts.get(socket.transport, 0) + 1
        return counts

    def stats(self) -> dict[str, Any]:
        transports = self.transport_counts()
        return {
            "clients": self.sio_client_count() + len(self.ws_members),
            "polling": transports["polling"],
            "websocket": transports["websocket"],
            "plain_ws": len(self.ws_members),
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "uptime": round(time.monotonic() - self.started, 1),
            "cpu_percent": round(self._cpu_percent, 1),
            "speedups": _speedups.IMPLEMENTATION,
        }

    async def publish_stats(self) -> None:
        last_wall, last_cpu = time.monotonic(), _cpu_seconds()
        while True:
            await trio.sleep(STATS_INTERVAL)
            wall, cpu = time.monotonic(), _cpu_seconds()
            self._cpu_percent = 100.0 * (cpu - last_cpu) / max(wall - last_wall, 1e-9)
            last_wall, last_cpu = wall, cpu
            stats = self.stats()
            # Volatile: a client that is busy (a poll in flight) skips a tick rather than queueing.
            await self.sio.emit("stats", stats, to=STATS_ROOM, volatile=True)
            if self.ws_stats:
                broadcast(self.ws_stats, json.dumps({"type": "stats", **stats}))

    # ------------------------------------------------------------------ HTTP

    async def process_request(self, request: Request) -> Response | None:
        if request.path == "/ws":
            return None
        if request.method not in ("GET", "HEAD"):
            return Response.text(405)
        if request.path == "/favicon.ico":  # browsers ask for it; there is none
            return Response(204, b"", [("cache-control", "max-age=86400")])
        if request.path in ("/", "/index.html"):
            return Response(200, self._page, [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store")])
        if request.path.startswith("/static/"):
            found = self._static.get(request.path[len("/static/") :])
            if found is not None:
                body, kind = found
                return Response(200, body, [("content-type", kind), ("cache-control", "max-age=3600")])
        return Response.text(404)

    async def run(self, host: str = "127.0.0.1", port: int = 8000, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.server = await nursery.start(
                lambda task_status: self.sio.serve(
                    host,
                    port,
                    handler={"/ws": self.ws_chat},
                    process_request=self.process_request,
                    task_status=task_status,
                )
            )
            nursery.start_soon(self.publish_stats)
            task_status.started(self)


async def start_demo(nursery: trio.Nursery, host: str = "127.0.0.1", port: int = 8000) -> Demo:
    """Start the demo in ``nursery``; return it once it listens (``demo.port``)."""
    demo = Demo()
    await nursery.start(demo.run, host, port)
    return demo


async def run_demo(host: str, port: int) -> None:
    """Serve the demo until Ctrl-C or SIGTERM: either closes every client cleanly (1001,
    parked polls answered) before returning."""
    async with trio.open_nursery() as nursery:
        demo = await start_demo(nursery, host, port)
        nursery.start_soon(_stop_on_sigterm, nursery.cancel_scope)
        shown_host = f"[{host}]" if ":" in host else host
        print(
            f"volleyio {__version__} demo (speedups: {_speedups.IMPLEMENTATION}) on "
            f"http://{shown_host}:{demo.port}/  (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )


async def _stop_on_sigterm(scope: trio.CancelScope) -> None:
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        return  # Windows: Ctrl-C only; signal handlers can only be set by the main thread
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            print("stopping (SIGTERM)", file=sys.stderr, flush=True)
            scope.cancel()
            return
