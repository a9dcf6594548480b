"""The Engine.IO v4 server on trio: the I/O driver of ``volleyio.engineio.EngineIOServer``.

:class:`EngineIOApp` is an :class:`~volleyio.trio._server.HttpMount`: mount it on the
front door (``serve(handler, mounts={"/engine.io/": app})``) or use
:func:`serve_engineio`. The sans-I/O core decides everything protocol-related
(statuses, bodies, CORS, heartbeat, upgrade); this module moves bytes, owns the tasks
and deadlines:

* HTTP long-polling with keep-alive (several requests per TCP connection). The first
  request of a connection comes parsed by the front door (its h11 connection is handed
  over, not re-parsed); later ones are parsed once here: plain heads (GET/POST/OPTIONS/
  HEAD, Content-Length framing, HTTP/1.1) by a small strict parser, anything else by
  h11. Responses are rendered directly (the core frames every body with Content-Length).
  A GET with nothing to send is parked: its task waits for the socket to become
  readable and the core's poll waker cancels that wait (one task, no watcher), so a
  client that goes away is noticed at once (``poll_cancelled``, the session ends). A
  woken GET yields to the scheduler once before taking its answer, and
  ``EngineIOSession.send``/``receive`` do not yield per message: what the handlers
  produce for one POST leaves in one GET (at most 16 packets). POST bodies are
  streamed: a declared ``Content-Length`` above ``maxPayload`` is refused before
  reading (413), a body that grows past it is refused while streaming (413), a
  truncated body or one idle for more than :data:`BODY_IDLE_TIMEOUT` seconds ends the
  request (``post_aborted``).
* WebSocket: the handshake is validated by ``volleyio.websocket.server_handshake``
  and the connection runs on :class:`~volleyio.trio.WebSocketConnection` with
  ``max_message_size = maxPayload`` (an oversized frame closes 1009 and the session
  ends with "message too big"). The connection's task reads (the socket itself, no
  reader task while it receives) and hands every message to the core synchronously
  (``on_event`` callbacks run right there). There is no writer task: packets are
  written by whoever queued them, right after the core call, with one non-blocking
  ``send`` (replies to messages still queued for the handler are coalesced into one
  write); a helper task exists only while the kernel buffer is full (see
  :class:`_WebSocketLink`).
* One timer task sleeps until ``core.next_deadline()`` (heartbeat, upgrade timeout).

Idle cost (benchmarks/engineio, 500-2,000 idle sessions): about 11 KiB per WebSocket
session and per polling session with a parked GET, the echo handler's task included.
``EngineIOSession.request`` keeps the handshake request as its raw head bytes
(:class:`EngineIORequest`, decoded on access).

Flow control (the numbers are constructor options):

* ``EngineIOSession.send`` waits while the session's buffered outgoing bytes are above
  ``send_high_water`` (64 KiB) until they drop to ``send_low_water`` (16 KiB). The core
  closes a session whose buffer would exceed ``ServerConfig.max_buffered_bytes`` (1 MiB,
  "slow consumer"); ``send_nowait`` and the on_event mode rely on that limit alone.
* Received messages wait in a per-session queue of ``max_queue`` (16) messages; while
  it is full the driver stops reading that session's POST bodies and WebSocket frames
  (TCP pushes back on the client). One POST can add up to its whole payload at once, so
  the queue may briefly exceed the bound by one request's worth (≤ ``maxPayload``).

Broadcast: send one :class:`volleyio.engineio.PreparedPacket` to many sessions; over
WebSocket the frame bytes are built once (``PreparedMessage`` in its ``frame_cache``;
with permessage-deflate, once per compression variant or per connection with context
takeover) and the same bytes are written to every receiver; over polling its payload
entry is encoded once.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket as _socket
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, Union
from urllib.parse import parse_qsl

import h11
import trio

from .. import websocket as _ws
from ..engineio.packets import PreparedPacket
from ..engineio.server import (
    AcceptWebSocket,
    Connected,
    Disconnected,
    DisconnectReason,
    EngineIOServer,
    Event,
    HttpRequest,
    HttpResponse,
    MessageReceived,
    PollParked,
    ReadBody,
    RefuseWebSocket,
    ServerConfig,
    Session,
    WebSocketChannel,
)
from ..errors import ConnectionClosedError as _CoreClosedError
from ..websocket.deflate import PerMessageDeflate, PreparedMessage
from ..errors import HandshakeError
from ._connection import Limits, WebSocketConnection, _raw_socket
from ._errors import ConnectionClosed, EngineIOClosed
from ._http import Request, Response
from ._server import _MAX_HEAD, WebSocketServer, _transport_of, serve
from ._waiting import ReceiverWait

__all__ = [
    "BODY_IDLE_TIMEOUT",
    "EngineIOApp",
    "EngineIORequest",
    "EngineIOSession",
    "serve_engineio",
]

logger = logging.getLogger("volleyio.trio.engineio")

#: LIMITS.md: a POST body that stalls this long (seconds between reads) is dropped.
BODY_IDLE_TIMEOUT = 10.0
#: Bytes of a pipelined next request kept while a GET is parked (the watcher stops
#: reading beyond that; browsers do not pipeline, so this is only a bound).
_MAX_STASH = 64 * 1024
#: After refusing a body (413): how long / how much of the rest we read and drop.
_LINGER_TIME = 1.0
_LINGER_BYTES = 4 * 1024 * 1024
#: Bounds the answers written at shutdown (parked GETs, WebSocket close frames).
_SHUTDOWN_WRITE_TIMEOUT = 2.0

Message = Union[str, bytes, PreparedPacket]
Handler = Callable[["EngineIOSession"], Awaitable[Any]]
EventCallback = Callable[[Event], None]

_TOO_LARGE = "too large"
#: receive() yields to the scheduler every this many messages taken without waiting.
_YIELD_EVERY = 16
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_ABORTED = "aborted"


class EngineIORequest:
    """The HTTP request that opened a session (its handshake), as an immutable record.

    Only the raw head bytes, the peer address and the TLS flag are stored; the other
    fields are decoded on access (an idle session holds one small ``bytes``).
    ``headers`` is a tuple of ``(lower-cased name, value)`` pairs in arrival order;
    ``query`` maps each query parameter to its first value (``query_params`` has all).
    Socket.IO exposes it as the handshake of its sockets (authentication, cookies).
    """

    __slots__ = ("_raw", "_remote", "_secure")

    def __init__(self, raw_head: bytes, remote: tuple[str, int] | None = None, secure: bool = False) -> None:
        self._raw = raw_head
        self._remote = remote
        self._secure = secure

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, name):
            raise AttributeError(f"{type(self).__name__} is immutable")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"EngineIORequest({self.method!r}, {self.target!r}, remote={self._remote!r})"

    def _request_line(self) -> list[str]:
        line = self._raw.split(b"\r\n", 1)[0].decode("latin-1")
        return line.split(" ")

    @property
    def raw_head(self) -> bytes:
        """The request line and header block exactly as received (ending with a blank line)."""
        return self._raw

    @property
    def method(self) -> str:
        return self._request_line()[0]

    @property
    def target(self) -> str:
        """The request target (path plus ``?query``)."""
        parts = self._request_line()
        return parts[1] if len(parts) > 1 else ""

    @property
    def http_version(self) -> str:
        parts = self._request_line()
        return parts[2].partition("/")[2] if len(parts) > 2 else ""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query_string(self) -> str:
        return self.target.partition("?")[2]

    @property
    def query_params(self) -> tuple[tuple[str, str], ...]:
        """Every query parameter, percent-decoded, in order (repeated keys repeated)."""
        return tuple(parse_qsl(self.query_string, keep_blank_values=True))

    @property
    def query(self) -> Mapping[str, str]:
        """The first value of each query parameter (read-only)."""
        out: dict[str, str] = {}
        for key, value in self.query_params:
            out.setdefault(key, value)
        return MappingProxyType(out)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """``((lower-cased name, value), ...)`` in arrival order (validated by h11)."""
        return tuple(Request("", "", raw_head=self._raw).headers)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``default``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    @property
    def remote(self) -> tuple[str, int] | None:
        """``(host, port)`` of the peer, if known."""
        return self._remote

    @property
    def secure(self) -> bool:
        """True when the request arrived over TLS."""
        return self._secure


class EngineIOSession(ReceiverWait):
    """One Engine.IO session as the application sees it, whatever the transport.

    ``receive`` and ``async for`` give the client's messages (``str`` or ``bytes``);
    once the session is closed ``receive`` raises :class:`EngineIOClosed` with the
    reason (``disconnect_reason``), after the messages already queued. ``request``
    is the handshake request (:class:`EngineIORequest`).
    """

    __slots__ = (
        "app", "sid", "_core", "_transport", "disconnect_reason", "disconnect_description", "request",
        "_inbox", "_recv_task", "_recv_lot", "_room_lot", "_drain_lot", "_closed_event", "_ops", "_link",
        "__weakref__",
    )

    def __init__(
        self,
        app: EngineIOApp,
        sid: str,
        core: Session | None,
        transport: str,
        request: EngineIORequest | None = None,
    ) -> None:
        self.app = app
        self.sid = sid
        self._core = core
        self._transport = transport
        #: Why the session ended ("ping timeout", "transport close", ...), None while open.
        self.disconnect_reason: str | None = None
        #: The core's detail for the reason (e.g. "overlap from client"), "" if none.
        self.disconnect_description = ""
        #: The handshake request (None only for sessions made without one, e.g. in tests).
        self.request = request
        # None while empty, and no parking lot until needed: an idle session holds neither.
        self._inbox: deque[str | bytes] | None = None
        # The task waiting in receive() (the usual single receiver needs no parking lot).
        self._recv_task: Any = None
        self._recv_lot: trio.lowlevel.ParkingLot | None = None
        self._room_lot: trio.lowlevel.ParkingLot | None = None
        self._drain_lot: trio.lowlevel.ParkingLot | None = None
        self._closed_event: trio.Event | None = None
        self._ops = 0
        # The WebSocket transport while one is open (its coalesced replies are written
        # before receive() waits).
        self._link: _WebSocketLink | None = None

    def __repr__(self) -> str:
        state = "open" if self.disconnect_reason is None else f"closed: {self.disconnect_reason}"
        return f"<EngineIOSession {self.sid} {self.transport} {state}>"

    @property
    def transport(self) -> str:
        """``"polling"`` or ``"websocket"`` (changes when the upgrade completes)."""
        if self._core is not None and self.disconnect_reason is None:
            return self._core.transport
        return self._transport

    @property
    def closed(self) -> bool:
        return self.disconnect_reason is not None

    @property
    def buffered_amount(self) -> int:
        """Outgoing bytes (characters for text) not yet handed to a transport."""
        if self._core is None or self.disconnect_reason is not None:
            return 0
        return self._core.buffered_amount

    async def send(self, data: Message) -> None:
        """Send one message (``str`` text, ``bytes`` binary, or a shared PreparedPacket).

        Waits while more than ``app.send_high_water`` bytes are buffered for this
        session (until they drop to ``app.send_low_water``). Raises EngineIOClosed if
        the session is closed. A cancellation point; it yields to the scheduler only
        when it waits (``receive`` yields every few messages and whenever it waits).
        """
        app = self.app
        while True:
            if self.disconnect_reason is not None or self._core is None:
                await trio.lowlevel.checkpoint()
                raise EngineIOClosed(self.disconnect_reason or "transport close")
            if self._core.buffered_amount <= app.send_high_water:
                break
            if self._drain_lot is None:
                self._drain_lot = trio.lowlevel.ParkingLot()
            await self._drain_lot.park()
        await _checkpoint_if_cancelled()
        app._driving += 1
        try:
            sent = self._core.send(data)
        finally:
            app._driving -= 1
        app._pump_events()
        if not sent:
            await trio.lowlevel.checkpoint()
            raise EngineIOClosed(self.disconnect_reason or "transport close")
        # No scheduler yield when the message was queued without waiting: an echo loop
        # then answers a whole POST (or WebSocket read) before the transport flushes,
        # so one GET carries the batch. The yield comes with receive() (every few
        # messages and when it blocks) or with the backpressure wait above.

    def send_nowait(self, data: Message, *, volatile: bool = False) -> bool:
        """Queue one message without waiting; ``False`` if it was dropped.

        ``volatile=True`` drops it when the transport cannot take it right now
        (Socket.IO volatile emits). Without it the message is dropped only when the
        session is closed, or when it would overflow ``max_buffered_bytes`` (the session
        is then closed as a "slow consumer").
        """
        if self._core is None or self.disconnect_reason is not None:
            return False
        app = self.app
        app._driving += 1
        try:
            sent = self._core.send(data, volatile=volatile)
        finally:
            app._driving -= 1
        app._pump_events()
        return sent

    async def receive(self) -> str | bytes:
        """The next message from the client; raises EngineIOClosed once closed."""
        inbox = self._inbox
        if not inbox:
            inbox = await self._wait_inbox()
        message = inbox.popleft()
        self._taken(inbox)
        # A cancellation check per message, a scheduler yield every few (fairness
        # without a task switch per message; see WebSocketConnection._yield_point).
        ops = self._ops = self._ops + 1
        if ops % _YIELD_EVERY:
            await _checkpoint_if_cancelled()
        else:
            await trio.lowlevel.checkpoint()
        return message

    async def receive_many(
        self, max_messages: int = 64, *, until: Callable[[str | bytes], bool] | None = None
    ) -> list[str | bytes]:
        """The messages already received, at least one (waiting for it if needed) and at
        most ``max_messages``, in order; raises EngineIOClosed once closed. For layers
        that handle a batch at a time (one call and one scheduling point per batch).
        With ``until``, the batch ends after the first message for which it is true."""
        inbox = self._inbox
        if not inbox:
            inbox = await self._wait_inbox()
        if until is None and len(inbox) <= max_messages:
            batch = list(inbox)
            inbox.clear()
        else:
            batch = []
            popleft = inbox.popleft
            while inbox and len(batch) < max_messages:
                message = popleft()
                batch.append(message)
                if until is not None and until(message):
                    break
            if not batch:
                batch.append(popleft())
        self._taken(inbox)
        await trio.lowlevel.checkpoint()
        return batch

    async def _wait_inbox(self) -> deque[str | bytes]:
        if self.app._on_event is not None:
            raise RuntimeError("receive() is not available on an EngineIOApp with on_event")
        inbox = self._inbox
        while not inbox:
            if self.disconnect_reason is not None:
                await trio.lowlevel.checkpoint()
                raise EngineIOClosed(self.disconnect_reason)
            link = self._link
            if link is not None and link.deferred:
                link.flush()  # the replies coalesced while the queue was draining
            await self._wait_woken()
            inbox = self._inbox
        return inbox

    def _taken(self, inbox: deque[str | bytes]) -> None:
        if not inbox:
            self._inbox = None
        if self._room_lot is not None and len(inbox) <= self.app.queue_low:
            self._room_lot.unpark_all()

    def __aiter__(self) -> EngineIOSession:
        # The session is its own iterator: no async generator (and no entry in trio's
        # async-generator registry) per session.
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.receive()
        except EngineIOClosed:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Close the session ("forced close"): what is buffered is still delivered."""
        if self.disconnect_reason is None:
            self.app.core.close(self.sid, trio.current_time())
            self.app._pump_events()
        await trio.lowlevel.checkpoint()

    async def wait_closed(self) -> None:
        """Return once the session has ended (see ``disconnect_reason``)."""
        if self.disconnect_reason is not None:
            await trio.lowlevel.checkpoint()
            return
        if self._closed_event is None:
            self._closed_event = trio.Event()
        await self._closed_event.wait()

    def statistics(self) -> dict[str, Any]:
        """Counters of the core session plus the driver's queue and the close reason."""
        stats: dict[str, Any] = {
            "sid": self.sid,
            "transport": self.transport,
            "open": self.disconnect_reason is None,
        }
        if self._core is not None:
            stats.update(self._core.statistics())
            stats["open"] = self.disconnect_reason is None
        stats["inbound_queue"] = len(self._inbox) if self._inbox else 0
        stats["disconnect_reason"] = self.disconnect_reason
        return stats

    # -- driver side

    def _deliver(self, data: str | bytes) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(data)
        self._wake_receivers()

    def _set_closed(self, reason: str, description: str) -> None:
        if self.disconnect_reason is not None:
            return
        self._transport = self.transport
        self.disconnect_reason = reason
        self.disconnect_description = description
        self._wake_receivers()
        if self._room_lot is not None:
            self._room_lot.unpark_all()
        if self._drain_lot is not None:
            self._drain_lot.unpark_all()
        if self._closed_event is not None:
            self._closed_event.set()

    async def _wait_room(self) -> None:
        while self._inbox and len(self._inbox) >= self.app.max_queue and self.disconnect_reason is None:
            if self._room_lot is None:
                self._room_lot = trio.lowlevel.ParkingLot()
            await self._room_lot.park()


class EngineIOApp:
    """An Engine.IO endpoint: mount it on ``serve()`` or run it with :func:`serve_engineio`.

    ``handler(session)`` runs in its own task for every new session; when it returns
    (or raises: the error is logged) the session is closed. Alternatively ``on_event``
    receives the core's events (``Connected``, ``MessageReceived``, ``Upgraded``,
    ``Disconnected``) synchronously, without per-session tasks: the callback may call
    ``app.core.send``/``app.core.close`` (or the sessions' ``send_nowait``) directly;
    outgoing packets are flushed by the transports' wakers without any further call.
    Call :meth:`wake` after changing the core from outside a callback if events must
    be delivered right away (otherwise they are delivered on the next scheduler tick).

    ``limits`` are the WebSocket transport's limits (close timeout, write buffer);
    ``max_message_size`` is always the Engine.IO ``maxPayload``.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        config: ServerConfig | None = None,
        limits: Limits | None = None,
        on_event: EventCallback | None = None,
        max_queue: int = 16,
        send_high_water: int = 64 * 1024,
        send_low_water: int = 16 * 1024,
    ) -> None:
        if handler is not None and on_event is not None:
            raise ValueError("give either a session handler or on_event, not both")
        if handler is None and on_event is None:
            raise ValueError("an EngineIOApp needs a session handler or on_event")
        if max_queue < 1 or send_low_water > send_high_water:
            raise ValueError("max_queue must be >= 1 and send_low_water <= send_high_water")
        self.core = EngineIOServer(config)
        self.config = self.core.config
        base = limits or Limits()
        self.limits = dataclasses.replace(
            base, max_message_size=self.config.max_payload, ping_interval=None, ping_timeout=None
        )
        self.max_queue = max_queue
        self.queue_low = max_queue // 4
        self.send_high_water = send_high_water
        self.send_low_water = send_low_water
        self._handler = handler
        self._on_event = on_event
        self._sessions: dict[str, EngineIOSession] = {}
        self._nursery: trio.Nursery | None = None
        self._timer_lot = trio.lowlevel.ParkingLot()
        self._event_lot = trio.lowlevel.ParkingLot()
        self._pumping = False
        self._shutting_down = False
        # >0 while the driver itself calls the core: it delivers the events and flushes
        # the WebSockets right after (see _pump_events), so the wakers need not wake
        # the event task. Application calls from elsewhere (on_event mode, core.send
        # from any task) do wake it.
        self._driving = 0
        self._event_task_woken = False
        # WebSocket transports with packets to write (flushed at the end of _pump_events).
        self._dirty: list[_WebSocketLink] = []
        # Transports whose write waits for more replies (see _WebSocketLink) and the
        # task that writes them if nobody else does by the end of the scheduler round.
        self._deferred: list[_WebSocketLink] = []
        self._deferred_task: Any = None
        # The handshake request being handled (picked up by the Connected event).
        self._handshake_request: EngineIORequest | None = None
        #: Open WebSocket connections of this endpoint (main transports and probes).
        self.websockets: set[WebSocketConnection] = set()
        self.core.set_timer_waker(self._timer_lot.unpark_all)
        self.core.set_event_waker(self._kick)

    # ------------------------------------------------------------------ application API

    def session(self, sid: str) -> EngineIOSession | None:
        """The open session ``sid``, or None."""
        return self._sessions.get(sid)

    @property
    def sessions(self) -> Mapping[str, EngineIOSession]:
        """The open sessions by sid (read-only view)."""
        return MappingProxyType(self._sessions)

    def wake(self) -> None:
        """The application changed the core (sent/closed) from outside a callback:
        deliver the resulting events now and re-arm the timers. Sends need no wake-up
        (the transports' wakers fire as packets are queued)."""
        self._pump_events()
        self._timer_lot.unpark_all()

    def broadcast(self, data: str | bytes | PreparedPacket, sids: Any = None, *, volatile: bool = False) -> int:
        """Send one message to many sessions (all open ones by default), encoded once.

        Returns the number of sessions it was queued for.
        """
        packet = data if isinstance(data, PreparedPacket) else PreparedPacket(data)
        targets = list(self._sessions) if sids is None else list(sids)
        count = 0
        send = self.send
        for sid in targets:
            if send(sid, packet, volatile=volatile):
                count += 1
        return count

    def send(self, sid: str, data: Message, *, volatile: bool = False) -> bool:
        """Send one message to session ``sid`` without waiting; False if it was dropped.

        Queued in the core (``core.send``) and flushed by the transport's waker. A
        :class:`PreparedPacket` (a broadcast's shared message) goes straight to the
        socket instead when it would be the next thing on the wire (an idle WebSocket
        session): one write per receiver, no buffer round trip. (Single replies keep
        the buffer: they are coalesced with the rest of a read's replies.) With
        ``close`` this is the Engine.IO transport a Socket.IO core runs on.
        """
        if data.__class__ is PreparedPacket:
            assert isinstance(data, PreparedPacket)
            session = self._sessions.get(sid)
            if session is not None:
                link = session._link
                if link is not None and link.write_direct(data):
                    return True
        return self.core.send(sid, data, volatile=volatile)

    def close(self, sid: str, now: float) -> None:
        """Close session ``sid`` ("forced close"); what is buffered is still delivered."""
        self.core.close(sid, now)
        self._pump_events()

    def statistics(self) -> dict[str, int]:
        stats = dict(self.core.statistics())
        stats["websocket_connections"] = len(self.websockets)
        return stats

    # ------------------------------------------------------------------ HttpMount: background

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The timer and event tasks; handler tasks live here too. Cancelled at shutdown."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._event_loop)
                nursery.start_soon(self._deferred_loop)
                task_status.started()
        finally:
            self._nursery = None
            self._shutting_down = True
            # Every session ends "forced close"; the connection tasks (cancelled at the
            # same time) answer parked GETs with ``1`` and close WebSockets with 1001.
            self.core.close_all(trio.current_time())
            self._pump_events()

    async def _timer_loop(self) -> None:
        core = self.core
        lot = self._timer_lot
        while True:
            deadline = core.next_deadline()
            if deadline is None:
                await lot.park()
            elif deadline > trio.current_time():
                with trio.move_on_at(deadline):
                    await lot.park()
            else:
                await trio.lowlevel.checkpoint()
            self._driving += 1
            try:
                core.handle_timers(trio.current_time())
            finally:
                self._driving -= 1
            self._pump_events()

    async def _event_loop(self) -> None:
        # Events caused by application calls outside the driver (e.g. core.close from a
        # task) are delivered here; the driver delivers its own right after each call.
        while True:
            await self._event_lot.park()
            self._event_task_woken = False
            self._pump_events()

    async def _deferred_loop(self) -> None:
        """Writes coalesced WebSocket replies that nobody flushed within a scheduler round
        (the handler went to wait elsewhere)."""
        while True:
            if not self._deferred:
                self._deferred_task = trio.lowlevel.current_task()

                def abort(_: Any) -> trio.lowlevel.Abort:
                    self._deferred_task = None
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
            # One more round: the deferring tasks flush their own batches meanwhile.
            await trio.lowlevel.checkpoint()
            deferred, self._deferred = self._deferred, []
            for link in deferred:
                if link.deferred:
                    link.flush()
            self._pump_events()

    def _defer(self, link: _WebSocketLink) -> None:
        link.deferred = True
        self._deferred.append(link)
        task = self._deferred_task
        if task is not None:
            self._deferred_task = None
            trio.lowlevel.reschedule(task)

    def _kick(self) -> None:
        """The core has new events (or a WebSocket has packets) outside a driver call."""
        if self._driving or self._pumping or self._event_task_woken:
            return  # the running driver code pumps right after
        self._event_task_woken = True
        self._event_lot.unpark_all()

    def _pump_events(self) -> None:
        if self._pumping:
            return  # a callback changed the core: the outer loop picks the events up
        core = self.core
        if not self._dirty and not core.has_events:
            return
        self._pumping = True
        try:
            while True:
                events = core.take_events()
                if events:
                    for event in events:
                        self._dispatch(event)
                    continue
                if not self._dirty:
                    return
                dirty, self._dirty = self._dirty, []
                for link in dirty:
                    link.dirty = False
                    if link.deferred:
                        continue  # already waiting for the end of the batch
                    session = link.session
                    if (session is not None and session._inbox) or link.ws._queue:
                        # More received messages are queued: their replies will follow,
                        # so write them all at once (receive() before it waits, the
                        # reader before it reads, or _deferred_loop at the round's end).
                        self._defer(link)
                        continue
                    link.flush()
        finally:
            self._pumping = False

    def _dispatch(self, event: Event) -> None:
        cls = event.__class__
        if cls is MessageReceived:
            assert isinstance(event, MessageReceived)
            session = self._sessions.get(event.sid)
            if self._on_event is None:
                if session is not None:
                    session._deliver(event.data)
                return
        elif cls is Connected:
            assert isinstance(event, Connected)
            core_session = self.core._sessions.get(event.sid)
            session = EngineIOSession(self, event.sid, core_session, event.transport, self._handshake_request)
            self._sessions[event.sid] = session
            if self._handler is not None:
                if self._nursery is None:
                    self.core.close(event.sid, trio.current_time())
                else:
                    self._nursery.start_soon(self._run_handler, session)
        elif cls is Disconnected:
            assert isinstance(event, Disconnected)
            session = self._sessions.pop(event.sid, None)
            if session is not None:
                session._set_closed(event.reason.value, event.description)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # noqa: BLE001 - the application's bug must not stop the driver
                logger.exception("Engine.IO on_event callback failed on %r", event)

    async def _run_handler(self, session: EngineIOSession) -> None:
        assert self._handler is not None
        try:
            await self._handler(session)
        except (EngineIOClosed, ConnectionClosed):
            pass
        except Exception:  # noqa: BLE001 - a handler's bug closes its session only
            logger.exception("Engine.IO session handler failed (sid %s)", session.sid)
        finally:
            if session.disconnect_reason is None:
                self.core.close(session.sid, trio.current_time())
                self._pump_events()

    def _flushed(self, sid: str) -> None:
        """Packets of ``sid`` left the buffer: wake senders waiting for room."""
        session = self._sessions.get(sid)
        if session is not None and session._drain_lot is not None and session.buffered_amount <= self.send_low_water:
            session._drain_lot.unpark_all()

    # ------------------------------------------------------------------ HttpMount: requests

    async def handle_http(
        self,
        stream: trio.abc.Stream,
        request: Request,
        h11_request: h11.Request,
        leftover: bytes,
        server: WebSocketServer,
    ) -> None:
        """Serve requests on this connection until it closes or upgrades (keep-alive).

        The front door's parse of the first request is reused (its h11 connection,
        when it hands it over); each later request is read and parsed once, here.
        """
        front = server.take_h11_connection(stream)
        if front is None:
            front = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
            front.receive_data(request.raw_head + leftover)
            if not isinstance(front.next_event(), h11.Request):  # pragma: no cover - parsed before
                return
        conn: h11.Connection | _FastBody = front
        del front
        raw = _raw_socket(stream)
        # The request travels in a list that _handle_one empties: while a GET is parked
        # or a WebSocket is open, no frame of this connection keeps the parsed request
        # (h11 objects, headers) alive.
        current: list[Any] = [conn, h11_request, request.raw_head, request]
        del request, h11_request, leftover, conn
        while True:
            carry = await self._handle_one(stream, raw, current, server)
            if carry is None:
                return
            if not isinstance(carry, bytes):
                await carry  # the WebSocket transport, for the rest of the connection
                return
            result = await _read_head(stream, raw, carry, trio.current_time() + server.open_timeout)
            del carry
            if result is None:
                return  # closed, idle keep-alive connection or a stalled head: just close
            if isinstance(result, int):
                await server.respond(stream, Response.text(result))
                return
            conn, event, head = result
            del result
            target = event.target
            path = target.partition(b"?")[0].decode("ascii", "replace")
            if server.mount_for(path) is not self:
                if isinstance(conn, _FastBody):
                    # Other routes get h11's objects (a WebSocket route validates them).
                    reparsed = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
                    reparsed.receive_data(head + conn.buffer)
                    parsed = reparsed.next_event()
                    assert isinstance(parsed, h11.Request)
                    conn, event = reparsed, parsed
                assert isinstance(conn, h11.Connection) and isinstance(event, h11.Request)
                other = Request(
                    method=event.method.decode("ascii", "replace"),
                    target=target.decode("ascii", "replace"),
                    http_version=event.http_version.decode("ascii", "replace"),
                    raw_head=head,
                )
                await server.dispatch(stream, other, event, bytes(conn.trailing_data[0]))
                return
            current = [conn, event, head, None]
            del conn, event, head

    async def _handle_one(
        self,
        stream: trio.abc.Stream,
        raw: _socket.socket | None,
        current: list[Any],
        server: WebSocketServer,
    ) -> bytes | Coroutine[Any, Any, None] | None:
        """Serve one request; returns the bytes read past it if the connection stays open,
        or the coroutine that runs an accepted WebSocket.

        ``current`` is ``[h11 connection, h11 request, raw head, front-door Request or
        None]``; it is emptied here (see handle_http).
        """
        conn: h11.Connection | _FastBody
        event: h11.Request | _FastRequest
        head: bytes
        request: Request | None
        conn, event, head, request = current
        current.clear()
        method = event.method.decode("ascii", "replace")
        path, _, query_string = event.target.decode("ascii", "replace").partition("?")
        headers: dict[str, str] = {}
        upgrade = False
        declared: int | None = None
        keep_alive = event.http_version == b"1.1"
        for raw_name, raw_value in event.headers:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            if name not in headers:
                headers[name] = value
            if name == "content-length":
                declared = int(value)
            elif name == "upgrade":
                if "websocket" in [t.strip().lower() for t in value.split(",")]:
                    upgrade = True
            elif name == "connection":
                if "close" in [t.strip().lower() for t in value.split(",")]:
                    keep_alive = False
        query = _parse_query(query_string)
        core_request = HttpRequest(method, path, query, headers, websocket_upgrade=upgrade)
        head_only = method == "HEAD"

        accepted: _ws.HandshakeAccepted | None = None
        if upgrade:
            # The fast parser leaves upgrades to h11.
            assert isinstance(event, h11.Request) and isinstance(conn, h11.Connection)
            handshake = _ws.server_handshake(
                event,
                origins="*",  # the Engine.IO core checks origins itself
                extensions=server.extension_factories,
                max_message_size=self.config.max_payload,
                max_fragments=self.limits.max_fragments,
                stream_messages=True,
            )
            if isinstance(handshake, _ws.HandshakeRejected):
                data = conn.send(handshake.response) or b""
                data += conn.send(h11.Data(data=handshake.body)) or b""
                data += conn.send(h11.EndOfMessage()) or b""
                await _send(stream, data)
                return None
            accepted = handshake
            del handshake

        sid = query.get("sid")
        if not sid:
            # A handshake (or an error answer to one): keep a compact record for the session.
            remote = request.remote if request is not None else None
            if remote is None:
                remote = _peer_of(stream)
            self._handshake_request = EngineIORequest(head, remote, server.ssl_context is not None)
        self._driving += 1
        try:
            outcome = self.core.handle_request(core_request, trio.current_time())
        finally:
            self._driving -= 1
        try:
            self._pump_events()  # a Connected event picks the record up
        finally:
            self._handshake_request = None

        del headers, core_request, query
        if isinstance(outcome, HttpResponse):
            if sid:
                self._flushed(sid)  # a GET answered at once took packets from the buffer
            complete = await _discard_body(stream, conn, self.config.max_payload) if not upgrade else False
            return await self._respond(stream, outcome, head_only, _carry(conn, complete and keep_alive))
        if isinstance(outcome, PollParked):
            complete = await _discard_body(stream, conn, self.config.max_payload)
            carry = _carry(conn, complete and keep_alive)
            del conn, event, head, request, accepted
            return await self._park(stream, raw, carry, outcome.sid, head_only)
        if isinstance(outcome, ReadBody):
            del event, head, request, accepted
            return await self._post(stream, conn, outcome, head_only, declared, keep_alive)
        if isinstance(outcome, RefuseWebSocket):
            await _send(stream, outcome.raw_response())
            return None
        assert isinstance(outcome, AcceptWebSocket)
        if accepted is None:  # pragma: no cover - the core accepts upgrade requests only
            return None
        if request is None:
            request = Request(
                method=method,
                target=event.target.decode("ascii", "replace"),
                http_version=event.http_version.decode("ascii", "replace"),
                raw_head=head,
                remote=_peer_of(stream),
                secure=server.ssl_context is not None,
            )
        assert isinstance(conn, h11.Connection)
        leftover = bytes(conn.trailing_data[0])
        del conn, event, head
        # Run by handle_http once this frame is gone (it would live as long as the
        # WebSocket otherwise).
        return self._websocket(stream, request, outcome, accepted, leftover, server)

    async def _respond(
        self, stream: trio.abc.Stream, response: HttpResponse, head_only: bool, carry: bytes | None
    ) -> bytes | None:
        """Write ``response``; returns ``carry`` (the bytes read past the request) if the
        connection stays open, None to close it (``carry`` None: it must close).

        The response is rendered here (the core's headers always frame the body with
        Content-Length), not by h11: its validation is most of a request's cost.
        """
        if self._shutting_down:
            carry = None
        if not await _send(stream, _render(response, head_only, carry is not None)):
            return None
        return carry

    async def _read_body(
        self, stream: trio.abc.Stream, conn: h11.Connection | _FastBody, limit: int, declared: int | None
    ) -> bytes | str:
        if declared is not None and declared > limit:
            return _TOO_LARGE  # refused before reading a byte of it
        if isinstance(conn, _FastBody):
            whole = await conn.read(stream, limit)
            return _ABORTED if whole is None else whole
        if conn.they_are_waiting_for_100_continue:
            if not await _send(stream, conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""):
                return _ABORTED
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return _ABORTED
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > limit:
                    return _TOO_LARGE
                continue
            if isinstance(event, h11.EndOfMessage):
                return bytes(body)
            if event is not h11.NEED_DATA:
                return _ABORTED
            data = await _receive(stream, BODY_IDLE_TIMEOUT)
            if data is None:
                return _ABORTED
            conn.receive_data(data)

    async def _post(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection | _FastBody,
        outcome: ReadBody,
        head_only: bool,
        declared: int | None,
        keep_alive: bool,
    ) -> bytes | None:
        sid = outcome.sid
        session = self._sessions.get(sid)
        try:
            if session is not None and self._on_event is None:
                # Backpressure: a full inbound queue stops us reading this client's body.
                await session._wait_room()
            body = await self._read_body(stream, conn, outcome.limit, declared)
        except BaseException:
            self.core.post_aborted(sid, trio.current_time())
            self._pump_events()
            raise
        now = trio.current_time()
        if body is _TOO_LARGE:
            response = self.core.post_too_large(sid, now)
            self._pump_events()
            await _send(stream, _render(response, head_only, False))
            await _linger(stream)
            return None
        if body is _ABORTED or isinstance(body, str):
            self.core.post_aborted(sid, now)
            self._pump_events()
            return None
        self._driving += 1
        try:
            response = self.core.post_body(sid, body, now)
        finally:
            self._driving -= 1
        self._pump_events()
        return await self._respond(stream, response, head_only, _carry(conn, keep_alive))

    async def _park(
        self,
        stream: trio.abc.Stream,
        raw: _socket.socket | None,
        carry: bytes | None,
        sid: str,
        head_only: bool,
    ) -> bytes | None:
        """Wait for a parked GET's answer while watching the client, then answer it.

        One task does both on plain TCP: it waits until the socket is readable, and the
        core's poll waker cancels that wait. Once woken it yields to the scheduler once
        before taking the answer, so what the other tasks woken in the same round (the
        session's handler fed by a POST, say) send goes out in this one response.
        Returns the bytes read past the request when the connection stays open.
        """
        core = self.core
        waiter = _PollWaiter()
        core.set_poll_waker(sid, waiter.wake)
        stash = b""
        gone = False
        answer: HttpResponse | None = None
        try:
            if raw is None:
                stash, gone, answer = await self._park_stream(stream, sid, waiter)
            else:
                while True:
                    answer = core.poll_ready(sid, trio.current_time())
                    if answer is not None:
                        break
                    with trio.CancelScope() as scope:
                        waiter.scope = scope
                        if not waiter.woken:
                            await trio.lowlevel.wait_readable(raw)
                    waiter.scope = None
                    if waiter.woken:
                        waiter.woken = False
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        continue
                    if len(stash) >= _MAX_STASH:
                        # Pipelining beyond the bound: stop watching, only the waker counts.
                        with trio.CancelScope() as scope:
                            waiter.scope = scope
                            if not waiter.woken:
                                await trio.sleep_forever()
                        waiter.scope = None
                        waiter.woken = False
                        continue
                    try:
                        data = raw.recv(16384)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        gone = True
                        break
                    stash += data  # a pipelined next request: served after this one
        finally:
            waiter.scope = None
            if answer is None:
                now = trio.current_time()
                if gone:
                    core.poll_cancelled(sid, now)
                    self._pump_events()
                else:
                    # Cancelled from outside (server shutdown): answer ``1`` if we can.
                    core.close(sid, now)
                    self._pump_events()
                    final = core.poll_ready(sid, now)
                    if final is None:
                        core.poll_cancelled(sid, now)
                    else:
                        with trio.CancelScope(shield=True), trio.move_on_after(_SHUTDOWN_WRITE_TIMEOUT):
                            await _send(stream, _render(final, head_only, False))
                    self._pump_events()
        if answer is None:
            return None  # the client left
        carry = await self._respond(stream, answer, head_only, carry)
        self._flushed(sid)
        return None if carry is None else carry + stash

    async def _park_stream(
        self, stream: trio.abc.Stream, sid: str, waiter: _PollWaiter
    ) -> tuple[bytes, bool, HttpResponse | None]:
        """:meth:`_park` for streams without a raw socket (TLS): a second task watches."""
        core = self.core
        stash = bytearray()
        gone = False
        answer: HttpResponse | None = None

        async def watch(cancel_scope: trio.CancelScope) -> None:
            nonlocal gone
            while len(stash) < _MAX_STASH:
                try:
                    data = await stream.receive_some(16384)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                if not data:
                    gone = True
                    cancel_scope.cancel()
                    return
                stash.extend(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            while True:
                answer = core.poll_ready(sid, trio.current_time())
                if answer is not None:
                    break
                with trio.CancelScope() as scope:
                    waiter.scope = scope
                    if not waiter.woken:
                        await trio.sleep_forever()
                waiter.scope = None
                if waiter.woken:
                    waiter.woken = False
                    await trio.lowlevel.cancel_shielded_checkpoint()
            nursery.cancel_scope.cancel()
        return bytes(stash), gone, answer

    # ------------------------------------------------------------------ WebSocket transport

    async def _websocket(
        self,
        stream: trio.abc.Stream,
        request: Request,
        outcome: AcceptWebSocket,
        accepted: _ws.HandshakeAccepted,
        leftover: bytes,
        server: WebSocketServer,
    ) -> None:
        channel = outcome.channel
        switching = _render_101(accepted.response, outcome.headers)
        if not await _send(stream, switching):
            if channel is not None:
                channel.connection_lost(trio.current_time(), DisconnectReason.TRANSPORT_CLOSE)
                self._pump_events()
            return
        ws = WebSocketConnection(
            stream, client=False, limits=self.limits, proto=accepted.connection, request=request, initial_data=leftover
        )
        del switching, accepted, leftover, request
        ws._nursery = server._nursery
        self.websockets.add(ws)
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
            await self._run_channel(ws, channel)
        finally:
            self.websockets.discard(ws)
            if not ws._transport_closed:
                with trio.CancelScope(shield=True):
                    if channel is not None and not channel.lost:
                        now = trio.current_time()
                        if channel._session._websocket is channel and channel._session.is_open:
                            self.core.close(channel.sid, now)
                        channel.connection_lost(now, DisconnectReason.TRANSPORT_CLOSE)
                        self._pump_events()
                    with trio.move_on_after(min(self.limits.close_timeout, _SHUTDOWN_WRITE_TIMEOUT)):
                        try:
                            await ws._send_close(1001, "going away")
                            await ws.drain_until_closed()
                        except ConnectionClosed:
                            pass
                    await ws._close_transport()

    async def _run_channel(self, ws: WebSocketConnection, channel: WebSocketChannel) -> None:
        """This task reads (and delivers synchronously); writes need no task of their own.

        Packets are written by whoever queued them, right after the core call (see
        :class:`_WebSocketLink`); a helper task runs only while the socket is full.
        """
        link = _WebSocketLink(self, ws, channel)
        channel.set_waker(link.wake)
        link.flush()  # the open packet of a WebSocket-only session
        self._pump_events()
        try:
            reason = await self._ws_reader(ws, channel, link)
            channel.connection_lost(trio.current_time(), reason)
            self._pump_events()
        finally:
            channel.set_waker(None)
            link.done = True
            if link.session is not None and link.session._link is link:
                link.session._link = None
        await ws.close()

    async def _ws_reader(
        self, ws: WebSocketConnection, channel: WebSocketChannel, link: _WebSocketLink
    ) -> DisconnectReason:
        backpressure = self._on_event is None
        sid = channel.sid
        receive = channel.receive
        while True:
            if link.deferred and not ws._queue:
                link.flush()  # replies to what was read: out before the next read
            room = self.max_queue
            if backpressure:
                session = self._sessions.get(sid)
                if session is not None and session._inbox:
                    if len(session._inbox) >= self.max_queue:
                        await session._wait_room()
                    inbox = session._inbox  # None again once the handler took everything
                    room = max(self.max_queue - len(inbox), 1) if inbox else self.max_queue
            try:
                messages = await ws.receive_many(room)
            except ConnectionClosed as exc:
                return _reason_for(exc.code)
            now = trio.current_time()
            self._driving += 1
            try:
                for message in messages:
                    receive(message, now)
            finally:
                self._driving -= 1
            self._pump_events()


class _PollWaiter:
    """The poll waker of one parked GET: cancels the wait of the task that parked it."""

    __slots__ = ("scope", "woken")

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.woken = False

    def wake(self) -> None:
        if self.woken:
            return  # the core wakes on every packet queued; once is enough
        self.woken = True
        if self.scope is not None:
            self.scope.cancel()


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


def _carry(conn: h11.Connection | _FastBody, keep_alive: bool) -> bytes | None:
    """The bytes read past a request whose body was consumed, if the connection may
    serve another request; None if it must close after the response."""
    if not keep_alive:
        return None
    if isinstance(conn, _FastBody):
        return bytes(conn.buffer) if conn.remaining == 0 else None
    if conn.their_state is not h11.DONE:
        return None
    return bytes(conn.trailing_data[0])


class _FastRequest:
    """A plain request head parsed by :func:`_fast_parse` (the attributes h11.Request
    has and the driver uses)."""

    __slots__ = ("method", "target", "http_version", "headers")

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.target = target
        self.http_version = b"1.1"
        self.headers = headers


class _FastBody:
    """The body of a :class:`_FastRequest`: ``Content-Length`` framing only."""

    __slots__ = ("buffer", "remaining")

    def __init__(self, buffer: bytes, remaining: int) -> None:
        self.buffer = bytearray(buffer)
        self.remaining = remaining

    async def read(self, stream: trio.abc.Stream, limit: int) -> bytes | None:
        """The whole body (None if the peer stalled or left), leaving the bytes past it
        in ``buffer``; at most ``limit`` bytes are ever held."""
        if self.remaining > limit:
            return None
        buffer = self.buffer
        while len(buffer) < self.remaining:
            data = await _receive(stream, BODY_IDLE_TIMEOUT)
            if not data:
                return None
            buffer += data
        body = bytes(buffer[: self.remaining])
        del buffer[: self.remaining]
        self.remaining = 0
        return body


# Requests the fast path takes (anything else goes through h11, which validates the
# rest: other methods, chunked bodies, Expect, upgrades, HTTP/1.0, obs-fold...).
_FAST_REQUEST_LINE = re.compile(rb"(GET|POST|OPTIONS|HEAD) ([\x21-\x7e]+) HTTP/1\.1")
_FAST_HEADER_LINE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"  # token ":" OWS
    rb"((?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?)[ \t]*"  # value OWS
)
_FAST_REFUSED = frozenset((b"transfer-encoding", b"expect", b"upgrade"))
# Below the RequestHeadGuard's limits (8 KiB request line, 16 KiB block, 128 fields),
# so a head the fast path accepts is one the guard would have let through.
_FAST_MAX_HEAD = 8 * 1024
_FAST_MAX_LINES = 100


def _fast_parse(data: bytes) -> tuple[_FastBody, _FastRequest, bytes] | None:
    """Parse a complete, plain request head at the start of ``data``; None when h11
    has to do it (incomplete, unusual or invalid: h11 then gives the error)."""
    end = data.find(b"\r\n\r\n", 0, _FAST_MAX_HEAD)
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    if len(lines) > _FAST_MAX_LINES:
        return None
    match = _FAST_REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    length = -1
    host = False
    for line in lines[1:]:
        field = _FAST_HEADER_LINE.fullmatch(line)
        if field is None:
            return None
        name = field.group(1).lower()
        value = field.group(2)
        if name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 15:
                return None
            length = int(value)
        elif name == b"host":
            if host:
                return None
            host = True
        elif name in _FAST_REFUSED:
            return None
        headers.append((name, value))
    if not host:
        return None
    head = data[: end + 4]
    return _FastBody(data[end + 4 :], max(length, 0)), _FastRequest(match.group(1), match.group(2), headers), head


def _parse_query(query_string: str) -> dict[str, str]:
    """First value of each query parameter (the fast path skips parse_qsl when nothing
    needs decoding)."""
    query: dict[str, str] = {}
    if not query_string:
        return query
    if "%" in query_string or "+" in query_string:
        for key, value in parse_qsl(query_string, keep_blank_values=True):
            query.setdefault(key, value)
        return query
    for part in query_string.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        query.setdefault(key, value)
    return query


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")
    return line


def _render(response: HttpResponse, head_only: bool, keep_alive: bool) -> bytes:
    """A core response on the wire (its header values come from the core or from request
    headers h11 validated: no CR/LF can reach here)."""
    parts = [_status_line(response.status)]
    framed = False
    for name, value in response.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not framed and name.lower() == "content-length":
            framed = True
    if not framed:
        parts.append(f"Content-Length: {len(response.body)}\r\n".encode("ascii"))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if response.body and not head_only:
        parts.append(response.body)
    return b"".join(parts)


async def _read_head(
    stream: trio.abc.Stream, raw: _socket.socket | None, initial: bytes, deadline: float
) -> tuple[h11.Connection | _FastBody, h11.Request | _FastRequest, bytes] | int | None:
    """The next request head of a keep-alive connection, parsed once.

    Returns ``(h11 connection, request, raw head bytes)``, an HTTP status to answer
    with (414/431 from the core's RequestHeadGuard, 400 from h11), or None when the
    peer went away or the head was not complete by ``deadline``.
    """
    data: bytes = initial
    if not data:
        data = await _read_some(stream, raw, deadline)
        if not data:
            return None
    fast = _fast_parse(data)
    if fast is not None:
        return fast
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    guard = _ws.RequestHeadGuard()
    head = bytearray()
    while True:
        if not data:
            data = await _read_some(stream, raw, deadline)
            if not data:
                return None
        try:
            guard.feed(data)
        except HandshakeError as exc:
            return exc.status
        head += data
        conn.receive_data(data)
        data = b""
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return exc.error_status_hint if exc.error_status_hint >= 400 else 400
        if event is h11.NEED_DATA:
            continue
        if not isinstance(event, h11.Request):
            return 400
        end = head.find(b"\r\n\r\n")
        return conn, event, bytes(head[: end + 4])


async def _read_some(stream: trio.abc.Stream, raw: _socket.socket | None, deadline: float) -> bytes:
    """One read (``b""`` at EOF, on error or at ``deadline``); straight from the socket
    when possible (a timeout scope only when it has to wait)."""
    if raw is not None:
        while True:
            try:
                data = raw.recv(16384)
            except BlockingIOError:
                with trio.move_on_at(deadline) as scope:
                    await trio.lowlevel.wait_readable(raw)
                if scope.cancelled_caught:
                    return b""
                continue
            except OSError:
                return b""
            await _checkpoint_if_cancelled()
            return data
    with trio.move_on_at(deadline):
        try:
            return bytes(await stream.receive_some(16384))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    return b""


async def _discard_body(stream: trio.abc.Stream, conn: h11.Connection | _FastBody, budget: int) -> bool:
    """Read and drop the rest of a request we answered without its body.

    True when it ended within ``budget`` bytes (the connection can be reused).
    """
    if isinstance(conn, _FastBody):
        if not conn.remaining:
            return True
        return await conn.read(stream, budget) is not None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return False
        if isinstance(event, h11.EndOfMessage):
            return True
        if isinstance(event, h11.Data):
            budget -= len(event.data)
            if budget < 0:
                return False
            continue
        if event is not h11.NEED_DATA:
            return False
        data = await _receive(stream, BODY_IDLE_TIMEOUT)
        if data is None:
            return False
        conn.receive_data(data)


def _peer_of(stream: trio.abc.Stream) -> tuple[str, int] | None:
    sock = getattr(_transport_of(stream), "socket", None)
    try:
        peer = sock.getpeername() if sock is not None else None
        if peer is not None:
            return (str(peer[0]), int(peer[1]))
    except (OSError, TypeError, IndexError):
        pass
    return None


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


def _render_101(response: h11.InformationalResponse, extra: tuple[tuple[str, str], ...]) -> bytes:
    lines = [b"HTTP/1.1 101 Switching Protocols"]
    for raw_name, raw_value in response.headers.raw_items():
        lines.append(raw_name + b": " + raw_value)
    for name, value in extra:
        lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then drop what the client still sends (briefly, boundedly).

    Closing with unread data makes the kernel send RST, and a client still uploading
    may then lose the response it was sent (the 413) before it reads it.
    """
    send_eof = getattr(stream, "send_eof", None)
    if send_eof is None:
        return
    try:
        await send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return
    budget = _LINGER_BYTES
    with trio.move_on_after(_LINGER_TIME):
        while budget > 0:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                return
            budget -= len(data)


async def _send(stream: trio.abc.Stream, data: bytes) -> bool:
    """Write all of ``data``: one direct non-blocking ``send`` first on plain TCP (no
    scheduler round trip when the kernel takes it all, the usual case)."""
    if stream.__class__ is trio.SocketStream:
        raw = _raw_socket(stream)
        if raw is not None:
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                await trio.lowlevel.checkpoint()
                return False
            if sent == len(data):
                await _checkpoint_if_cancelled()
                return True
            data = data[sent:]
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return False
    return True


async def _receive(stream: trio.abc.Stream, idle_timeout: float) -> bytes | None:
    """One read for a request body: bytes, ``b""`` at EOF, None after ``idle_timeout``."""
    with trio.move_on_after(idle_timeout):
        try:
            return bytes(await stream.receive_some(65536))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return b""
    return None


async def serve_engineio(
    handler: Handler | None,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    path: str = "/engine.io/",
    config: ServerConfig | None = None,
    on_event: EventCallback | None = None,
    engineio_limits: Limits | None = None,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    **serve_options: Any,
) -> None:
    """Serve one Engine.IO endpoint at ``path`` until cancelled.

    ``server = await nursery.start(serve_engineio, handler)``; the app is
    ``server.mounts[path]``. Other options go to :func:`volleyio.trio.serve`.
    """
    app = EngineIOApp(handler, config=config, on_event=on_event, limits=engineio_limits)
    await serve(None, host, port, mounts={path: app}, task_status=task_status, **serve_options)
