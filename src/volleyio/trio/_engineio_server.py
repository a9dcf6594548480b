"""The Engine.IO v4 server on trio: the I/O driver of ``volleyio.engineio.EngineIOServer``.

:class:`EngineIOApp` is an :class:`~volleyio.trio._server.HttpMount`: mount it on the
front door (``serve(handler, mounts={"/engine.io/": app})``) or use
:func:`serve_engineio`. The sans-I/O core decides everything protocol-related
(statuses, bodies, CORS, heartbeat, upgrade); this module moves bytes, owns the tasks
and deadlines:

* HTTP long-polling with keep-alive (several requests per TCP connection): the
  server's one HTTP/1.1 connection loop (:mod:`volleyio.trio._http_loop`) reads, parses
  and checks every request and keeps the connection; :mod:`._engineio_polling` serves
  them (parked GETs, streamed POST bodies: see there). ``EngineIOSession.send``/
  ``receive`` do not yield per message: what the handlers produce for one POST leaves
  in one GET (at most 16 packets).
* WebSocket (:mod:`._engineio_websocket`): the handshake is validated by ``volleyio.websocket.server_handshake``
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

This module holds the endpoint (:class:`EngineIOApp`: the core, its event pump and
timers); the session API is in :mod:`._engineio_session`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ..engineio.packets import PreparedPacket
from ..engineio.server import (
    Connected,
    Disconnected,
    EngineIOServer,
    Event,
    MessageReceived,
    ServerConfig,
)
from ._connection import Limits, WebSocketConnection
from ._engineio_polling import handle_request as _handle_polling_request
from ._engineio_session import EngineIORequest, EngineIOSession, Message
from ._engineio_websocket import _WebSocketLink
from ._errors import ConnectionClosed, EngineIOClosed
from ._http import Request
from ._http_loop import BODY_IDLE_TIMEOUT, HttpConnection, Takeover
from ._server import WebSocketServer, serve

if TYPE_CHECKING:
    from ._cluster_polling import ClusterForwarder

__all__ = [
    "BODY_IDLE_TIMEOUT",
    "EngineIOApp",
    "EngineIORequest",
    "EngineIOSession",
    "serve_engineio",
]

logger = logging.getLogger("volleyio.trio.engineio")

Handler = Callable[[EngineIOSession], Awaitable[Any]]
EventCallback = Callable[[Event], None]
_T = TypeVar("_T")


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
        #: Forwards requests of sessions other cluster nodes own (``cluster_polling``).
        self.forwarder: ClusterForwarder | None = None
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

    def drive(self, call: Callable[..., _T], *args: Any, handshake: EngineIORequest | None = None) -> _T:
        """Call into the core as the drivers do (the HTTP/1.1 loop's polling requests and
        ``volleyio.asgi``): the wakers know the driver is at work, and the resulting
        events are delivered (and WebSocket packets flushed) right after. ``handshake``
        is the request record a session opened by this call gets."""
        outer = self._handshake_request  # a call made from an event callback keeps it
        self._handshake_request = handshake
        self._driving += 1
        try:
            return call(*args)
        finally:
            self._driving -= 1
            try:
                self._pump_events()
            finally:
                self._handshake_request = outer

    # ------------------------------------------------------------------ HttpMount: background

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The timer and event tasks; handler tasks live here too. Cancelled at shutdown."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._event_loop)
                nursery.start_soon(self._deferred_loop)
                if self.forwarder is not None:
                    await nursery.start(self.forwarder.run)
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
            self.drive(core.handle_timers, trio.current_time())

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

    def handle_request(self, request: Request, http: HttpConnection) -> Awaitable[Takeover | None]:
        """One request of this endpoint, read by the server's connection loop (which
        keeps the connection alive between requests); see :mod:`._engineio_polling`."""
        return _handle_polling_request(self, request, http)


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
