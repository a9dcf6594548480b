"""Demo server: one page, one WebSocket endpoint, a chat room and live counters.

Everything the page needs is served by the same process: ``GET /`` returns the page,
``/ws`` is the WebSocket endpoint. Chat lines are broadcast to every client with the
frame built once; once a second every client gets the counters.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources

import trio

from .. import _speedups, __version__
from ..trio import ConnectionClosed, Request, Response, WebSocketConnection, WebSocketServer, broadcast, serve

MAX_NAME_LENGTH = 32
MAX_TEXT_LENGTH = 1_000
STATS_INTERVAL = 1.0


@dataclass
class ChatRoom:
    """The demo's whole state: who is connected and what has been counted."""

    members: set[WebSocketConnection] = field(default_factory=set)
    messages_in: int = 0
    messages_out: int = 0
    started: float = field(default_factory=time.monotonic)

    def publish(self, payload: dict[str, object]) -> None:
        self.messages_out += broadcast(self.members, json.dumps(payload, separators=(",", ":")))

    def stats(self, cpu_percent: float) -> dict[str, object]:
        return {
            "type": "stats",
            "clients": len(self.members),
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "uptime": round(time.monotonic() - self.started, 1),
            "cpu_percent": round(cpu_percent, 1),
            "speedups": _speedups.IMPLEMENTATION,
        }


def _page() -> bytes:
    return resources.files(__package__).joinpath("page.html").read_bytes()


def _parse_chat(raw: str | bytes) -> tuple[str, str] | str:
    """The (name, text) of a chat message, or the reason it was refused."""
    if not isinstance(raw, str):
        return "send chat messages as JSON text"
    try:
        message = json.loads(raw)
    except ValueError:
        return "not JSON"
    if not isinstance(message, dict) or message.get("type") != "chat":
        return 'expected {"type": "chat", "name": ..., "text": ...}'
    name, text = message.get("name"), message.get("text")
    if not isinstance(name, str) or not isinstance(text, str):
        return "name and text must be strings"
    name, text = name.strip()[:MAX_NAME_LENGTH] or "anonymous", text.strip()
    if not text:
        return "empty message"
    if len(text) > MAX_TEXT_LENGTH:
        return f"message longer than {MAX_TEXT_LENGTH} characters"
    return name, text


def make_handler(room: ChatRoom) -> Callable[[WebSocketConnection], Awaitable[None]]:
    async def chat(ws: WebSocketConnection) -> None:
        room.members.add(ws)
        try:
            await ws.send(json.dumps({"type": "welcome", "version": __version__, "transport": "websocket"}))
            async for raw in ws:
                room.messages_in += 1
                parsed = _parse_chat(raw)
                if isinstance(parsed, str):
                    await ws.send(json.dumps({"type": "error", "reason": parsed}))
                    continue
                name, text = parsed
                room.publish({"type": "chat", "name": name, "text": text, "at": time.time()})
        except ConnectionClosed:
            pass
        finally:
            room.members.discard(ws)

    return chat


def make_process_request(page: bytes) -> Callable[[Request], Awaitable[Response | None]]:
    async def process_request(request: Request) -> Response | None:
        if request.path == "/ws":
            return None
        if request.path in ("/", "/index.html") and request.method in ("GET", "HEAD"):
            return Response(200, page, [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store")])
        return Response.text(404)

    return process_request


async def publish_stats(room: ChatRoom) -> None:
    last_wall, last_cpu = time.monotonic(), _cpu_seconds()
    while True:
        await trio.sleep(STATS_INTERVAL)
        wall, cpu = time.monotonic(), _cpu_seconds()
        percent = 100.0 * (cpu - last_cpu) / max(wall - last_wall, 1e-9)
        last_wall, last_cpu = wall, cpu
        if room.members:
            room.publish(room.stats(percent))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def start_demo(
    nursery: trio.Nursery, host: str = "127.0.0.1", port: int = 8000
) -> tuple[WebSocketServer, ChatRoom]:
    """Start the demo in ``nursery``; return the server (for its port) and the room."""
    room = ChatRoom()
    server: WebSocketServer = await nursery.start(
        lambda task_status: serve(
            {"/ws": make_handler(room)},
            host,
            port,
            process_request=make_process_request(_page()),
            task_status=task_status,
        )
    )
    nursery.start_soon(publish_stats, room)
    return server, room


async def run_demo(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        server, _ = await start_demo(nursery, host, port)
        shown_host = f"[{host}]" if ":" in host else host
        print(
            f"volleyio {__version__} demo (speedups: {_speedups.IMPLEMENTATION}) on "
            f"http://{shown_host}:{server.port}/  (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
