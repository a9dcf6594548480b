"""An :class:`~volleyio.trio.EngineIOApp` served over ASGI (long-polling and WebSocket).

The Engine.IO core decides everything protocol-related (statuses, bodies, CORS,
heartbeat, upgrade, slow consumers), exactly as under ``serve()``; the session objects,
their handlers and the timers are the :class:`EngineIOApp`'s own. This module only
moves ASGI messages:

* Polling: a request becomes the core's ``HttpRequest``; a parked GET waits for the
  core's poll waker while a watcher takes ``receive()`` (an ``http.disconnect`` is the
  client leaving: the session ends, as under ``serve()``); a POST body is read from the
  ``http.request`` messages with the same limits (a declared ``Content-Length`` above
  ``maxPayload`` is refused before reading, 413; a body growing past it, 413; a body
  idle for :data:`~volleyio.trio.BODY_IDLE_TIMEOUT` seconds or cut short ends the
  request).
* WebSocket: the ASGI server does the framing. Every ``websocket.receive`` is handed to
  the session's channel; a message longer than ``maxPayload`` (UTF-8 bytes for text)
  closes with 1009 and the session ends with "message too big" (the server has
  buffered it by then: set its own limit, hypercorn's ``websocket_max_message_size``,
  to the same value). A writer task per connection sends what the channel has queued,
  one ``websocket.send`` per packet; while the peer does not read, the ASGI ``send``
  waits and packets stay in the core's buffer, where the slow-consumer limit applies.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from ..engineio.packets import PreparedPacket
from ..engineio.server import (
    AcceptWebSocket,
    DisconnectReason,
    HttpResponse,
    PollParked,
    ReadBody,
    RefuseWebSocket,
    WebSocketChannel,
)
from ..trio._engineio_polling import _SHUTDOWN_WRITE_TIMEOUT, _end_unanswered, _park_stream, _PollWaiter
from ..trio._engineio_server import EngineIOApp
from ..trio._engineio_websocket import _reason_for
from ..trio._http_loop import ABORTED, BODY_IDLE_TIMEOUT, TOO_LARGE
from ._scope import (
    Receive,
    Scope,
    Send,
    asgi_headers,
    core_request,
    handshake_record,
    refuse_websocket,
    send_plain,
    send_response,
)

__all__ = ["EngineIOEndpoint"]


class _Disconnected(Exception):
    """The ASGI server reported that the client went away."""


class _ReceiveStream:
    """What the polling driver's ``_park_stream`` watches, over ASGI ``receive``: it never
    returns data (a GET's body is ignored) and returns ``b""`` once the client left."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return b""


def _text_size(message: str | bytes) -> int:
    """Bytes of a message on the wire (UTF-8 for text; counted only when it may matter)."""
    return len(message.encode("utf-8")) if isinstance(message, str) else len(message)


class EngineIOEndpoint:
    """Serves ``app`` (its sessions, handlers and timers) over ASGI at ``path``."""

    def __init__(self, app: EngineIOApp, path: str, *, close_timeout: float = _SHUTDOWN_WRITE_TIMEOUT) -> None:
        self.app = app
        self.path = path if path.endswith("/") else path + "/"
        self.close_timeout = close_timeout

    def matches(self, path: str) -> bool:
        return path.startswith(self.path) or path == self.path[:-1]

    # ------------------------------------------------------------------ HTTP

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app
        request = core_request(scope)
        sid = request.query.get("sid")
        record = None if sid else handshake_record(scope)
        outcome = app.drive(app.core.handle_request, request, trio.current_time(), handshake=record)
        head_only = request.method == "HEAD"
        if isinstance(outcome, HttpResponse):
            if sid:
                app._flushed(sid)  # a GET answered at once took packets from the buffer
            await send_response(send, outcome, head_only)
        elif isinstance(outcome, PollParked):
            await self._park(outcome.sid, receive, send, head_only)
        elif isinstance(outcome, ReadBody):
            declared = request.headers.get("content-length", "")
            length = int(declared) if declared.isdigit() else None  # the server validated it
            await self._post(outcome, receive, send, head_only, length)
        else:  # pragma: no cover - the core answers upgrades only to WebSocket requests
            await send_plain(send, 400, "Bad request")

    async def _park(self, sid: str, receive: Receive, send: Send, head_only: bool) -> None:
        app = self.app
        core = app.core
        waiter = _PollWaiter()
        core.set_poll_waker(sid, waiter.wake)
        gone = False
        answer: HttpResponse | None = None
        try:
            _, gone, answer = await _park_stream(app, _ReceiveStream(receive), sid, waiter)
        finally:
            waiter.scope = None
            if answer is None:
                # The client left, or the ASGI server is shutting down: answer ``1`` if we can.
                final = _end_unanswered(app, sid, gone)
                if final is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout):
                        try:
                            await send_response(send, final, head_only)
                        except Exception:  # noqa: BLE001 - the client is gone: nothing to tell
                            pass
                app._pump_events()
        if answer is not None:
            await send_response(send, answer, head_only)
            app._flushed(sid)

    async def _post(
        self, outcome: ReadBody, receive: Receive, send: Send, head_only: bool, declared: int | None
    ) -> None:
        app = self.app
        sid = outcome.sid
        session = app._sessions.get(sid)
        try:
            if session is not None and app._on_event is None:
                await session._wait_room()  # backpressure: a full inbound queue stops reading
            body = await _read_body(receive, outcome.limit, declared)
        except BaseException:
            app.drive(app.core.post_aborted, sid, trio.current_time())
            raise
        now = trio.current_time()
        if isinstance(body, str):
            if body == TOO_LARGE:
                await send_response(send, app.drive(app.core.post_too_large, sid, now), head_only)
                return
            app.drive(app.core.post_aborted, sid, now)
            return
        response = app.drive(app.core.post_body, sid, body, now)
        await send_response(send, response, head_only)

    # ------------------------------------------------------------------ WebSocket

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        request = core_request(scope)
        record = None if request.query.get("sid") else handshake_record(scope)
        outcome = app.drive(app.core.handle_request, request, trio.current_time(), handshake=record)
        if isinstance(outcome, RefuseWebSocket):
            await refuse_websocket(scope, send, 400, outcome.message.encode("utf-8"))
            return
        if isinstance(outcome, HttpResponse):  # pragma: no cover - errors on upgrades are refusals
            await refuse_websocket(scope, send, outcome.status, outcome.body)
            return
        if not isinstance(outcome, AcceptWebSocket):  # pragma: no cover
            await refuse_websocket(scope, send, 400, b"Bad request")
            return
        channel = outcome.channel
        try:
            await send({"type": "websocket.accept", "headers": asgi_headers(outcome.headers)})
        except BaseException:
            if channel is not None:
                app.drive(channel.connection_lost, trio.current_time(), DisconnectReason.TRANSPORT_CLOSE)
            raise
        if outcome.close_immediately or channel is None:
            # Node accepts a WebSocket it cannot use (a second one for a sid) and closes it.
            await send({"type": "websocket.close", "code": 1000})
            return
        await self._run_channel(channel, receive, send)

    async def _run_channel(self, channel: WebSocketChannel, receive: Receive, send: Send) -> None:
        app = self.app
        link = _Link(self, channel)
        channel.set_waker(link.wake)
        reason = DisconnectReason.TRANSPORT_CLOSE
        try:
            async with trio.open_nursery() as nursery:
                link.scope = nursery.cancel_scope
                nursery.start_soon(link.write, send)
                reason = await self._read(channel, receive, send)
                nursery.cancel_scope.cancel()
        finally:
            channel.set_waker(None)
            if not channel.lost:
                now = trio.current_time()
                if trio.current_effective_deadline() == -math.inf:
                    # The ASGI server is shutting down: end the session, say goodbye (1001).
                    if app.core.session(channel.sid) is not None:
                        app.core.close(channel.sid, now)
                    with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout):
                        try:
                            await send({"type": "websocket.close", "code": 1001})
                        except Exception:  # noqa: BLE001 - already gone
                            pass
                channel.connection_lost(now, reason)
                app._pump_events()

    async def _read(self, channel: WebSocketChannel, receive: Receive, send: Send) -> DisconnectReason:
        app = self.app
        session = app._sessions.get(channel.sid)
        backpressure = app._on_event is None
        limit = app.config.max_payload
        while True:
            if backpressure and session is not None and session._inbox and len(session._inbox) >= app.max_queue:
                await session._wait_room()
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data: str | bytes | None = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                if len(data) > limit or (data.__class__ is str and len(data) * 4 > limit and _text_size(data) > limit):
                    try:
                        await send({"type": "websocket.close", "code": 1009})
                    except Exception:  # noqa: BLE001 - already gone
                        pass
                    return DisconnectReason.MESSAGE_TOO_BIG
                app.drive(channel.receive, data, trio.current_time())
            elif kind == "websocket.disconnect":
                return _reason_for(message.get("code"))


class _Link:
    """The writer of one WebSocket channel: sends the packets the core queued for it."""

    def __init__(self, endpoint: EngineIOEndpoint, channel: WebSocketChannel) -> None:
        self.endpoint = endpoint
        self.channel = channel
        self.scope: trio.CancelScope | None = None
        self.finished = False
        # The writer parked for more packets (woken directly: no Event per packet), or
        # "more came while it was busy".
        self._task: Any = None
        self._pending = False

    def wake(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)
        else:
            self._pending = True
        scope = self.scope
        if scope is not None and scope.deadline == math.inf and self.endpoint.app.core.session(self.channel.sid) is None:
            # The session ended (slow consumer, forced close...) and a send may be stuck
            # on a peer that does not read: the goodbye gets close_timeout, no more.
            scope.deadline = trio.current_time() + self.endpoint.close_timeout

    async def _park(self) -> None:
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def write(self, send: Send) -> None:
        app = self.endpoint.app
        channel = self.channel
        try:
            while True:
                self._pending = False
                frames, closing = channel.take_outgoing()
                app._pump_events()  # a close completed by take_outgoing
                for frame in frames:
                    if frame.__class__ is PreparedPacket:
                        assert isinstance(frame, PreparedPacket)
                        frame = frame.websocket_message
                    if frame.__class__ is str:
                        await send({"type": "websocket.send", "text": frame})
                    else:
                        await send({"type": "websocket.send", "bytes": frame})
                if frames:
                    app._flushed(channel.sid)
                if closing:
                    await send({"type": "websocket.close", "code": 1001 if app._shutting_down else 1000})
                    self.finished = True
                    if self.scope is not None:
                        # The reader waits for the peer's close answer, boundedly.
                        self.scope.deadline = min(self.scope.deadline, trio.current_time() + self.endpoint.close_timeout)
                    return
                if not self._pending:
                    # Anything queued while we were sending set _pending (we were not
                    # parked): no second look at an empty buffer.
                    await self._park()
        except Exception:  # noqa: BLE001 - the ASGI server's send failed: the peer is gone
            self.finished = True
            if self.scope is not None:
                self.scope.cancel()


async def _read_body(receive: Receive, limit: int, declared: int | None) -> bytes | str:
    """A POST body from ``http.request`` messages, or ``TOO_LARGE`` / ``ABORTED``."""
    if declared is not None and declared > limit:
        return TOO_LARGE  # refused before reading a byte of it
    body = bytearray()
    while True:
        message: Any = None
        with trio.move_on_after(BODY_IDLE_TIMEOUT):
            message = await receive()
        if message is None or message["type"] == "http.disconnect":
            return ABORTED
        body += message.get("body", b"")
        if len(body) > limit:
            return TOO_LARGE
        if not message.get("more_body", False):
            return bytes(body)
