"""Plain WebSocket routes over ASGI: the handler API of ``volleyio.trio.serve``.

A route handler is ``async def handler(ws)`` as under :func:`volleyio.trio.serve`; ``ws``
is an :class:`ASGIWebSocket`, which has the everyday part of
:class:`~volleyio.trio.WebSocketConnection`'s API: ``send``, ``receive``, ``async for``,
``receive_many``, ``close``, ``wait_closed``, ``request``, ``subprotocol``,
``close_code``/``close_reason``, ``closed``, ``remote_address``. What differs, because
the ASGI server owns the socket and does the framing:

* no ``ping()``/``pong()`` and no keepalive of ours: configure the server's
  (hypercorn: ``websocket_ping_interval``);
* no ``send_nowait``/``MessageHandler`` callback mode, no ``statistics()``, no
  per-message ``compress=`` (the server negotiates permessage-deflate itself);
* ``max_message_size`` is checked on each whole message the server hands over (too big:
  close 1009, the handler's ``receive`` raises ``ConnectionClosedError``); the server
  buffers the message first, so set its own limit to match (hypercorn:
  ``websocket_max_message_size``);
* a close code received from the peer is not passed on by every ASGI server (hypercorn
  reports 1006 for a peer's clean close): ``close_code`` is what the server said.

Origins and subprotocols are checked as ``serve()`` checks them (same-origin by
default); when the handler returns the connection is closed with 1000, when it raises
with 1011 (the error is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import h11
import trio

from ..errors import HandshakeError
from ..trio._errors import ConnectionClosed, ConnectionClosedError, closed_exception
from ..trio._http import Request
from ..websocket.handshake import OriginPolicy, _origin_allowed, _select_subprotocol
from ._scope import Receive, Scope, Send, front_request, refuse_websocket, remote_of

__all__ = ["ASGIWebSocket", "WebSocketRoute"]

logger = logging.getLogger("volleyio.asgi")

WebSocketHandler = Callable[["ASGIWebSocket"], Awaitable[Any]]
Data = str | bytes


class ASGIWebSocket:
    """One accepted WebSocket of a route (see the module documentation)."""

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, request: Request, subprotocol: str | None,
        max_message_size: int,
    ) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        #: The opening handshake request.
        self.request = request
        #: The negotiated subprotocol, or None.
        self.subprotocol = subprotocol
        self.max_message_size = max_message_size
        #: "OPEN", "CLOSING" (our close sent) or "CLOSED".
        self.state = "OPEN"
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._closed_event = trio.Event()

    @property
    def closed(self) -> bool:
        return self.state == "CLOSED"

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return remote_of(self._scope)

    def _closed_exc(self) -> ConnectionClosed:
        return closed_exception(self.close_code or 1006, self.close_reason or "")

    def _mark_closed(self, code: int, reason: str = "") -> None:
        if self.state != "CLOSED":
            self.state = "CLOSED"
            if self.close_code is None:
                self.close_code = code
                self.close_reason = reason
            self._closed_event.set()

    async def send(self, message: Data | bytearray | memoryview) -> None:
        """Send one message: ``str`` as text, bytes-like as binary."""
        if self.state != "OPEN":
            await trio.lowlevel.checkpoint()
            raise self._closed_exc()
        if isinstance(message, str):
            await self._send({"type": "websocket.send", "text": message})
        else:
            await self._send({"type": "websocket.send", "bytes": bytes(message)})

    async def receive(self) -> Data:
        """The next message; raises ConnectionClosed once the connection is closed."""
        while True:
            if self.state == "CLOSED":
                await trio.lowlevel.checkpoint()
                raise self._closed_exc()
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data: Data | None = message.get("text")
                if data is None:
                    data = bytes(message.get("bytes") or b"")
                limit = self.max_message_size
                if len(data) > limit or (
                    isinstance(data, str) and len(data) * 4 > limit and len(data.encode("utf-8")) > limit
                ):
                    await self.close(1009, "message too big")
                    raise ConnectionClosedError(1009, "message too big")
                return data
            if kind == "websocket.disconnect":
                self._mark_closed(int(message.get("code", 1006)), str(message.get("reason") or ""))

    async def receive_many(self, max_messages: int = 64) -> list[Data]:
        """One message (the ASGI server hands them over one at a time), as a list."""
        return [await self.receive()]

    def __aiter__(self) -> ASGIWebSocket:
        return self

    async def __anext__(self) -> Data:
        try:
            return await self.receive()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (the ASGI server completes the closing handshake)."""
        if self.state != "OPEN":
            await trio.lowlevel.checkpoint()
            return
        self.state = "CLOSING"
        self.close_code, self.close_reason = code, reason
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:  # noqa: BLE001 - the peer is gone already
            pass
        self._mark_closed(code, reason)

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    def __repr__(self) -> str:
        return f"<ASGIWebSocket {self.request.path} {self.state}>"


class WebSocketRoute:
    """Accepts WebSocket scopes for one path and runs ``handler`` on them."""

    def __init__(
        self,
        handler: WebSocketHandler,
        *,
        origins: OriginPolicy = None,
        subprotocols: Sequence[str] | Callable[[list[str]], str | None] = (),
        max_message_size: int = 1_048_576,
        close_timeout: float = 10.0,
    ) -> None:
        self.handler = handler
        self.origins = origins
        self.subprotocols = subprotocols
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        request = front_request(scope)
        headers = [(name, value) for name, value in request.headers]
        try:
            # HTTP/1.0 in name only: h11 then does not insist on a Host header (a WebSocket
            # over HTTP/2 has :authority instead); the origin check reads the values.
            h11_request = h11.Request(
                method="GET", target=request.target.encode("latin-1") or b"/", headers=headers, http_version=b"1.0"
            )
        except h11.LocalProtocolError:
            await refuse_websocket(scope, send, 400, b"Bad request")
            return
        if not _origin_allowed(self.origins, request.header("origin"), request.header("host") or "", h11_request):
            await refuse_websocket(scope, send, 403, b"Forbidden: origin not allowed")
            return
        offered = list(scope.get("subprotocols") or [])
        try:
            subprotocol = _select_subprotocol(self.subprotocols, offered)
        except HandshakeError:
            logger.exception("subprotocol selection failed")
            await refuse_websocket(scope, send, 500, b"Internal server error")
            return
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol is not None:
            accept["subprotocol"] = subprotocol
        await send(accept)
        ws = ASGIWebSocket(scope, receive, send, request, subprotocol, self.max_message_size)
        code, reason = 1000, ""
        try:
            await self.handler(ws)
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - the handler's bug closes this connection with 1011
            logger.exception("WebSocket handler failed")
            code, reason = 1011, "internal error"
        finally:
            if ws.state == "OPEN":
                if trio.current_effective_deadline() == float("-inf"):
                    code, reason = 1001, "going away"  # cancelled: the server shuts down
                with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout):
                    await ws.close(code, reason)
            ws._mark_closed(code, reason)
