"""The ASGI application: volleyio's endpoints in front of another ASGI app."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Union

import trio

from ..trio._engineio_server import EngineIOApp
from ..trio._socketio_server import SocketIOServer
from ..websocket.handshake import OriginPolicy
from ._engineio import EngineIOEndpoint
from ._scope import ASGIApp as _ASGICallable
from ._scope import Message, Receive, Scope, Send, refuse_websocket, scope_path, send_plain
from ._websocket import WebSocketHandler, WebSocketRoute

__all__ = ["ASGIApp"]

logger = logging.getLogger("volleyio.asgi")

Route = Union[WebSocketHandler, WebSocketRoute]


class ASGIApp:
    """An ASGI 3 application serving volleyio next to another ASGI application.

    * ``socketio``: a :class:`~volleyio.trio.SocketIOServer`, served at its ``path``
      (``/socket.io/``): Engine.IO long-polling, WebSocket and the upgrade, and the
      browser client files (``serve_client``).
    * ``engineio``: more Engine.IO endpoints, ``{path: EngineIOApp}``.
    * ``websockets``: plain WebSocket routes, ``{path: handler}``; a handler is ``async
      def handler(ws)`` with ``ws`` an :class:`~volleyio.asgi.ASGIWebSocket`, or a
      :class:`~volleyio.asgi.WebSocketRoute` for per-route options. ``origins``,
      ``subprotocols`` and ``max_message_size`` are the defaults of plain handlers.
    * ``other_asgi_app``: every other request and WebSocket goes there (404 without one).

    The servers' background tasks (heartbeats, timeouts, the handlers' nursery) run from
    the ASGI **lifespan**: startup starts them and shutdown stops them (open sessions
    end "forced close"; the clients get ``1`` or a 1001 close). The lifespan is passed
    on to ``other_asgi_app`` (its startup runs after ours, its shutdown before ours; an
    app that does not speak the lifespan protocol is left alone). Without a lifespan
    (an ASGI server run with it off) the Engine.IO endpoints answer 503.

    Needs an ASGI server running on **trio** (hypercorn's trio worker: ``hypercorn
    --worker-class trio module:app``, or ``hypercorn.trio.serve``).
    """

    def __init__(
        self,
        socketio: SocketIOServer | None = None,
        other_asgi_app: _ASGICallable | None = None,
        *,
        engineio: Mapping[str, EngineIOApp] | None = None,
        websockets: Mapping[str, Route] | None = None,
        origins: OriginPolicy = None,
        subprotocols: Sequence[str] = (),
        max_message_size: int = 1_048_576,
    ) -> None:
        self.socketio = socketio
        self.other_asgi_app = other_asgi_app
        endpoints: list[EngineIOEndpoint] = []
        if socketio is not None:
            endpoints.append(EngineIOEndpoint(socketio.engineio, socketio.path))
        for path, app in (engineio or {}).items():
            endpoints.append(EngineIOEndpoint(app, path))
        # Longest prefix first.
        self._endpoints = sorted(endpoints, key=lambda endpoint: len(endpoint.path), reverse=True)
        self._routes: dict[str, WebSocketRoute] = {}
        for path, handler in (websockets or {}).items():
            if not isinstance(handler, WebSocketRoute):
                handler = WebSocketRoute(
                    handler, origins=origins, subprotocols=subprotocols, max_message_size=max_message_size
                )
            self._routes[path] = handler
        self._running = False

    @property
    def running(self) -> bool:
        """True between lifespan startup and shutdown."""
        return self._running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            if self.other_asgi_app is not None:
                await self.other_asgi_app(scope, receive, send)
            return
        path = scope_path(scope)
        for endpoint in self._endpoints:
            if endpoint.matches(path):
                if not self._running:
                    text = "volleyio: not started (the ASGI server must run the lifespan protocol)"
                    if kind == "http":
                        await send_plain(send, 503, text)
                    else:
                        await receive()
                        await refuse_websocket(scope, send, 503, text.encode())
                    return
                if kind == "http":
                    await endpoint.http(scope, receive, send)
                else:
                    await endpoint.websocket(scope, receive, send)
                return
        if kind == "websocket":
            route = self._routes.get(path)
            if route is not None:
                await route(scope, receive, send)
                return
        if self.other_asgi_app is not None:
            await self.other_asgi_app(scope, receive, send)
        elif kind == "http":
            await send_plain(send, 404, "404 Not Found\n")
        else:
            await receive()
            await refuse_websocket(scope, send, 404, b"Not Found")

    # ------------------------------------------------------------------ lifespan

    async def _start(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.socketio is not None:
                await nursery.start(self.socketio.app.run)
            for endpoint in self._endpoints:
                if self.socketio is None or endpoint.app is not self.socketio.engineio:
                    await nursery.start(endpoint.app.run)
            task_status.started()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - the protocol starts so
            return
        inner = _InnerLifespan(self.other_asgi_app, scope) if self.other_asgi_app is not None else None
        startup_failure: str | None = None
        shutdown_failure: str | None = None
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(self._start)
            except Exception as exc:  # noqa: BLE001 - reported to the ASGI server
                logger.exception("volleyio startup failed")
                startup_failure = f"volleyio: {exc!r}"
            if startup_failure is None and inner is not None:
                nursery.start_soon(inner.run)
                reply = await inner.exchange("lifespan.startup")
                if reply is not None and reply["type"] == "lifespan.startup.failed":
                    startup_failure = str(reply.get("message", ""))
            if startup_failure is None:
                self._running = True
                await send({"type": "lifespan.startup.complete"})
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.shutdown":
                        break
                self._running = False
                if inner is not None:
                    reply = await inner.exchange("lifespan.shutdown")
                    if reply is not None and reply["type"] == "lifespan.shutdown.failed":
                        shutdown_failure = str(reply.get("message", ""))
            # Stops volleyio's tasks (sessions end "forced close") and the wrapped app's
            # lifespan task; the answers below are sent outside the cancelled scope.
            nursery.cancel_scope.cancel()
        if startup_failure is not None:
            await send({"type": "lifespan.startup.failed", "message": startup_failure})
        elif shutdown_failure is not None:
            await send({"type": "lifespan.shutdown.failed", "message": shutdown_failure})
        else:
            await send({"type": "lifespan.shutdown.complete"})


class _InnerLifespan:
    """The wrapped application's lifespan, run as a task and spoken to through channels."""

    def __init__(self, app: _ASGICallable, scope: Scope) -> None:
        self.app = app
        self.scope = scope
        self.to_app, self._app_receive = trio.open_memory_channel[Message](1)
        self._app_send, self.from_app = trio.open_memory_channel[Message](1)
        self.supported = True

    async def run(self) -> None:
        async with self._app_send:
            try:
                await self.app(self.scope, self._app_receive.receive, self._app_send.send)
            except Exception:  # noqa: BLE001 - as uvicorn's "auto": an app without lifespan
                logger.info("the wrapped ASGI app does not handle the lifespan protocol", exc_info=True)
                self.supported = False

    async def exchange(self, kind: str) -> dict[str, Any] | None:
        """Send ``kind`` and return the app's answer; None if it returned without one."""
        if not self.supported:
            return None
        await self.to_app.send({"type": kind})
        try:
            reply = await self.from_app.receive()
        except trio.EndOfChannel:
            self.supported = False
            return None
        return dict(reply)
