"""The WebSocket transport of Engine.IO sessions on trio (after an accepted upgrade).

The connection's task reads (the socket itself, no reader task while it receives) and
hands every message to the core synchronously. There is no writer task: packets are
written by whoever queued them, right after the core call, with one non-blocking
``send`` (see :class:`_WebSocketLink`); a helper task exists only while the kernel
buffer is full.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .. import websocket as _ws
from ..engineio.packets import PreparedPacket
from ..engineio.server import AcceptWebSocket, DisconnectReason, WebSocketChannel
from ..errors import ConnectionClosedError as _CoreClosedError
from ..websocket.deflate import PerMessageDeflate, PreparedMessage
from ._connection import WebSocketConnection
from ._errors import ConnectionClosed
from ._http import Request
from ._http_loop import render_h11_response, send_bytes

if TYPE_CHECKING:
    from ._engineio_server import EngineIOApp
    from ._server import WebSocketServer

#: Bounds the answers written at shutdown (WebSocket close frames).
_SHUTDOWN_WRITE_TIMEOUT = 2.0


async def serve_websocket(
    app: EngineIOApp,
    stream: trio.abc.Stream,
    request: Request,
    outcome: AcceptWebSocket,
    accepted: _ws.HandshakeAccepted,
    leftover: bytes,
    server: WebSocketServer,
) -> None:
    channel = outcome.channel
    switching = render_h11_response(accepted.response, b"", outcome.headers)
    if not await send_bytes(stream, switching):
        if channel is not None:
            channel.connection_lost(trio.current_time(), DisconnectReason.TRANSPORT_CLOSE)
            app._pump_events()
        return
    ws = WebSocketConnection(
        stream, client=False, limits=app.limits, proto=accepted.connection, request=request, initial_data=leftover
    )
    del switching, accepted, leftover, request
    ws._nursery = server._nursery
    app.websockets.add(ws)
    if ws._initial or ws._raw is None:
        # Bytes that came with the handshake are parsed by the reader first; TLS
        # is read by the reader task (the receiving task reads plain TCP itself).
        ws._start_reader()
    try:
        if outcome.close_immediately or channel is None:
            # Node accepts a WebSocket it cannot use (second one for a sid) and closes it.
            await ws.close(1000, "")
            return
        del outcome
        await _run_channel(app, ws, channel)
    finally:
        app.websockets.discard(ws)
        if not ws._transport_closed:
            with trio.CancelScope(shield=True):
                if channel is not None and not channel.lost:
                    now = trio.current_time()
                    if channel._session._websocket is channel and channel._session.is_open:
                        app.core.close(channel.sid, now)
                    channel.connection_lost(now, DisconnectReason.TRANSPORT_CLOSE)
                    app._pump_events()
                with trio.move_on_after(min(app.limits.close_timeout, _SHUTDOWN_WRITE_TIMEOUT)):
                    try:
                        await ws._send_close(1001, "going away")
                        await ws.drain_until_closed()
                    except ConnectionClosed:
                        pass
                await ws._close_transport()

async def _run_channel(app: EngineIOApp, ws: WebSocketConnection, channel: WebSocketChannel) -> None:
    """This task reads (and delivers synchronously); writes need no task of their own.

    Packets are written by whoever queued them, right after the core call (see
    :class:`_WebSocketLink`); a helper task runs only while the socket is full.
    """
    link = _WebSocketLink(app, ws, channel)
    channel.set_waker(link.wake)
    link.flush()  # the open packet of a WebSocket-only session
    app._pump_events()
    try:
        reason = await _ws_reader(app, ws, channel, link)
        channel.connection_lost(trio.current_time(), reason)
        app._pump_events()
    finally:
        channel.set_waker(None)
        link.done = True
        if link.session is not None and link.session._link is link:
            link.session._link = None
    await ws.close()

async def _ws_reader(
    app: EngineIOApp, ws: WebSocketConnection, channel: WebSocketChannel, link: _WebSocketLink
) -> DisconnectReason:
    backpressure = app._on_event is None
    sid = channel.sid
    receive = channel.receive
    while True:
        if link.deferred and not ws._queue:
            link.flush()  # replies to what was read: out before the next read
        room = app.max_queue
        if backpressure:
            session = app._sessions.get(sid)
            if session is not None and session._inbox:
                if len(session._inbox) >= app.max_queue:
                    await session._wait_room()
                inbox = session._inbox  # None again once the handler took everything
                room = max(app.max_queue - len(inbox), 1) if inbox else app.max_queue
        try:
            messages = await ws.receive_many(room)
        except ConnectionClosed as exc:
            return _reason_for(exc.code)
        now = trio.current_time()
        app._driving += 1
        try:
            for message in messages:
                receive(message, now)
        finally:
            app._driving -= 1
        app._pump_events()


class _WebSocketLink:
    """Writes a WebSocket channel's packets without a writer task per session.

    The channel's waker only marks the link dirty; the driver flushes dirty links at
    the end of the core call that queued the packets (``EngineIOApp._pump_events``,
    or the event task for core calls made elsewhere). A flush takes the packets only
    when the connection has nothing unsent, and writes them with one non-blocking
    ``send``. What the kernel does not take is drained by a helper task that lives
    only until the socket has taken everything; meanwhile new packets stay in the
    core's buffer, so ``buffered_amount`` (send() backpressure, the slow-consumer
    limit) keeps counting them.
    """

    __slots__ = ("app", "ws", "channel", "session", "dirty", "deferred", "busy", "done")

    def __init__(self, app: EngineIOApp, ws: WebSocketConnection, channel: WebSocketChannel) -> None:
        self.app = app
        self.ws = ws
        self.channel = channel
        self.session = app._sessions.get(channel.sid)
        if self.session is not None:
            self.session._link = self
        self.dirty = False
        self.deferred = False  # waiting in app._deferred
        self.busy = False  # the helper task runs
        self.done = False

    def wake(self) -> None:
        if not self.dirty:
            self.dirty = True
            app = self.app
            app._dirty.append(self)
            app._kick()

    def flush(self) -> None:
        self.deferred = False
        if self.busy or self.done:
            return
        ws = self.ws
        if ws._raw is None or ws._out or ws._flushing or ws._transport_closed or ws.state != "OPEN" or ws._close_sent:
            self._start_task()
            return
        channel = self.channel
        frames, closing = channel.take_outgoing()
        if frames:
            data = _encode_frames(ws, frames)
            ws._n_msg_out += len(frames)
            sent = ws._send_now(data)
            if sent < 0:
                channel.connection_lost(trio.current_time(), _reason_for(ws.close_code))
                return
            if sent < len(data):
                ws._out += memoryview(data)[sent:]
                self._start_task()
            self.app._flushed(channel.sid)
        if closing:
            self._start_task()

    def write_direct(self, packet: PreparedPacket) -> bool:
        """Write a broadcast's packet at once when it would be the next thing on the wire:
        nothing queued in the core or in the socket, and no more input of this session
        waiting (its replies are coalesced instead). False: use the core's buffer."""
        if self.busy or self.done or self.dirty or self.deferred:
            return False
        ws = self.ws
        if ws._raw is None or ws._out or ws._flushing or ws._queue or ws._close_sent or ws.state != "OPEN":
            return False
        session = self.session
        if session is None or session._inbox or session._core is None or not session._core.send_direct(packet):
            return False
        frame = _frame_of(ws, packet)
        ws._n_msg_out += 1
        sent = ws._send_now(frame)
        if sent < 0:
            self.channel.connection_lost(trio.current_time(), _reason_for(ws.close_code))
        elif sent < len(frame):
            ws._out += memoryview(frame)[sent:]
            self._start_task()
        return True

    def _start_task(self) -> None:
        nursery = self.app._nursery or self.ws._nursery
        if self.busy or nursery is None:
            return
        self.busy = True
        try:
            nursery.start_soon(self._drain)
        except RuntimeError:  # the nursery is closing (shutdown)
            self.busy = False

    async def _drain(self) -> None:
        app = self.app
        ws = self.ws
        channel = self.channel
        try:
            while True:
                await ws.wait_written()
                frames, closing = channel.take_outgoing()
                app._pump_events()  # a close completed by take_outgoing
                if frames:
                    data = _encode_frames(ws, frames)
                    await ws.send_frame_bytes(data)
                    ws._n_msg_out += len(frames) - 1
                    app._flushed(channel.sid)
                if closing:
                    try:
                        await ws.close(1001 if app._shutting_down else 1000, "")
                    except ConnectionClosed:
                        pass
                    return
                if not frames and not ws._out:
                    return
        except (ConnectionClosed, _CoreClosedError):
            # The reader may be held by backpressure: end the session from here.
            channel.connection_lost(trio.current_time(), _reason_for(ws.close_code))
            app._pump_events()
        finally:
            self.busy = False


def _reason_for(code: int | None) -> DisconnectReason:
    """The session's end reason for the way its WebSocket closed."""
    if code == 1009:
        return DisconnectReason.MESSAGE_TOO_BIG
    if code is None or code in (1000, 1001, 1005, 1006):
        return DisconnectReason.TRANSPORT_CLOSE
    return DisconnectReason.TRANSPORT_ERROR


def _frame_of(ws: WebSocketConnection, frame: str | bytes | PreparedPacket) -> bytes:
    """One encoded Engine.IO packet as wire bytes; a PreparedPacket's frame is built once
    for every receiver (per compression variant) and kept in its ``frame_cache``."""
    if frame.__class__ is PreparedPacket:
        assert isinstance(frame, PreparedPacket)
        extensions = ws._proto.extensions
        deflate = extensions[0] if len(extensions) == 1 else None
        if not extensions or isinstance(deflate, PerMessageDeflate):
            prepared = frame.frame_cache
            if prepared.__class__ is not PreparedMessage:
                prepared = frame.frame_cache = PreparedMessage(frame.websocket_message)
            assert isinstance(prepared, PreparedMessage)
            return prepared.frames_for(deflate) if isinstance(deflate, PerMessageDeflate) else prepared.plain_frame()
        frame = frame.websocket_message
    assert not isinstance(frame, PreparedPacket)
    return ws._proto.send_message(frame)


def _encode_frames(ws: WebSocketConnection, frames: list[str | bytes | PreparedPacket]) -> bytes:
    """All pending Engine.IO packets as wire bytes for one write."""
    if len(frames) == 1:
        return _frame_of(ws, frames[0])
    out = bytearray()
    for frame in frames:
        out += _frame_of(ws, frame)
    return bytes(out)
