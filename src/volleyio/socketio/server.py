"""A sans-I/O Socket.IO v5 server core, on top of Engine.IO sessions.

The core keeps, per Engine.IO connection, the attachment decoder and the namespace
sockets; it sends through an :class:`EngineIOTransport` (``EngineIOServer`` is one) and
reports to the application through events (:meth:`SocketIOServer.take_events`).

Driving it: feed every Engine.IO event with :meth:`SocketIOServer.handle_engineio_event`
(or the three ``engineio_*`` methods), and run :meth:`SocketIOServer.handle_timers` at
:meth:`SocketIOServer.next_deadline` (the connect timeout).

Protocol rules enforced (PROTOCOL-NOTES "Socket.IO v5"): CONNECT must come first; the
answer is ``40[/nsp,]{"sid":<socket id>}`` with a socket id distinct from the Engine.IO
sid; unknown namespaces get ``44[/nsp,]{"message":"Invalid namespace"}``; auth refusal
gets ``{"message":...,"data":...}``; a duplicate CONNECT, a packet for a namespace that is
not connected, a client CONNECT_ERROR or any decode error closes the whole Engine.IO
connection; no namespace joined within ``connect_timeout_ms`` closes it too.

Ack ids are counted per namespace (Node's ``nsp._ids``), so :meth:`SocketIOServer.
broadcast_with_ack` sends one packet, encoded once, to all its receivers. A CONNECT whose
decision is deferred already has its socket id (:class:`ConnectRequested`): the socket
may join rooms and be emitted to, what it is sent is held until the CONNECT answer.
``namespace_resolver`` decides about namespaces that were not added (dynamic ones).
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from ..engineio import server as eio
from ..errors import VolleyError
from .adapter import Adapter, BroadcastOptions, InMemoryAdapter
from .recovery import RECOVERABLE_REASONS, RecoveryConfig, RecoveryStore, RestoredSession, SavedSession
from .packets import (
    DEFAULT_MAX_ATTACHMENTS,
    MAX_ACK_ID,
    RESERVED_EVENTS,
    Decoder,
    Packet,
    PacketType,
    SocketIODecodeError,
    _encode,
    encode_packet,
)

__all__ = [
    "DEFER",
    "INVALID_NAMESPACE",
    "ConnectionRefusedError",
    "DisconnectedError",
    "AckReceived",
    "ConnectAttempt",
    "ConnectRefused",
    "ConnectRequested",
    "EngineIOTransport",
    "EventReceived",
    "NamespaceConfig",
    "SocketConnected",
    "SocketDisconnected",
    "SocketIOConfig",
    "SocketIOServer",
]

INVALID_NAMESPACE = "Invalid namespace"


class ConnectionRefusedError(VolleyError):  # noqa: A001 - the name python-socketio users know
    """Raised by a connect handler or middleware to refuse a namespace connection.

    The client gets ``44[/nsp,]{"message": message, "data": data}`` (``data`` omitted when
    ``None``); the JavaScript client raises ``connect_error`` with ``err.message`` and
    ``err.data``.
    """

    def __init__(self, message: str = "Connection rejected by server", data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class DisconnectedError(VolleyError):
    """The socket is not connected (any more): an ack can no longer arrive."""


class EngineIOTransport(Protocol):
    """What the core needs from Engine.IO (``EngineIOServer`` provides it).

    ``data`` is a ``str``/``bytes`` message, or whatever the ``prepare`` hook of
    :class:`SocketIOServer` made of one for a broadcast (``engineio.PreparedPacket``).
    """

    def send(self, sid: str, data: Any, *, volatile: bool = False) -> bool: ...

    def close(self, sid: str, now: float) -> None: ...


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class SocketConnected:
    sid: str
    namespace: str
    eio_sid: str
    auth: Any


@dataclass(slots=True)  # not frozen: made per message, and a frozen dataclass costs 3x to build
class EventReceived:
    """``ack_id`` is set when the client expects an answer: call :meth:`SocketIOServer.ack`."""

    sid: str
    namespace: str
    event: str | int | float
    args: list[Any]
    ack_id: int | None = None


@dataclass(slots=True)  # not frozen: made per message, and a frozen dataclass costs 3x to build
class AckReceived:
    """The client answered an :meth:`SocketIOServer.emit` made with ``with_ack=True``."""

    sid: str
    namespace: str
    ack_id: int
    args: list[Any]


@dataclass(frozen=True, slots=True)
class SocketDisconnected:
    """``reason``: "client namespace disconnect", "server namespace disconnect",
    "server shutting down"-style Engine.IO reasons ("transport close", "ping timeout",
    ...), or "parse error"/"invalid state" when the client broke the protocol."""

    sid: str
    namespace: str
    reason: str


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True, slots=True)
class ConnectRefused:
    """An auth hook's refusal: sent as ``44[/nsp,]{"message":...,"data":...}``."""

    message: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class ConnectAttempt:
    eio_sid: str
    namespace: str
    auth: Any


class _Defer:
    """Returned by an auth hook that decides later (for example after async I/O)."""

    def __repr__(self) -> str:
        return "DEFER"


DEFER = _Defer()

AuthHook = Callable[[ConnectAttempt], Union[ConnectRefused, _Defer, None]]


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """An auth hook returned :data:`DEFER`: answer with :meth:`SocketIOServer.accept_connect`
    or :meth:`SocketIOServer.refuse_connect`.

    ``sid`` is the id the socket will have. Until the decision the socket can already
    join rooms and be emitted to: what is sent to it is held and goes out right after
    the CONNECT answer (and is discarded on refusal).
    """

    eio_sid: str
    namespace: str
    auth: Any
    sid: str = ""
    #: With connection state recovery on, True when the socket got its earlier id, rooms and ``data`` back.
    recovered: bool = False
    #: Why a recovery the client asked for (``pid``/``offset`` in its auth) was refused:
    #: "unknown session", "session expired" or "offset unavailable" (else ``None``).
    recovery_refused: str | None = None


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    """``authorize`` returns ``None`` to accept, a :class:`ConnectRefused` to refuse, or
    :data:`DEFER` to decide later (a :class:`ConnectRequested` event is emitted; until the
    answer, packets for that namespace close the connection, as in Node)."""

    authorize: AuthHook | None = None


Event = Union[SocketConnected, EventReceived, AckReceived, SocketDisconnected, ConnectRequested]


@dataclass(frozen=True, slots=True)
class SocketIOConfig:
    connect_timeout_ms: int = 45_000
    max_attachments: int = DEFAULT_MAX_ATTACHMENTS
    namespaces: Mapping[str, NamespaceConfig] = field(default_factory=lambda: {"/": NamespaceConfig()})
    #: Connection state recovery (off when ``None``), see ``volleyio.socketio.recovery``.
    recovery: RecoveryConfig | None = None


# ------------------------------------------------------------------------------ state


class _Socket:
    __slots__ = ("sid", "namespace", "eio_sid", "pending_acks", "held", "pid", "data", "connected")

    def __init__(self, sid: str, namespace: str, eio_sid: str) -> None:
        self.sid = sid
        self.namespace = namespace
        self.eio_sid = eio_sid
        self.pending_acks: set[int] = set()
        self.pid: str | None = None  # private session id (connection state recovery)
        self.data: Any = None  # the application's data, kept with the session
        self.connected = False
        # Messages for a socket whose CONNECT is still being decided (None once accepted).
        self.held: list[Sequence[Any]] | None = None


class _Connection:
    __slots__ = ("eio_sid", "decoder", "sockets", "pending", "connect_deadline", "open")

    def __init__(self, eio_sid: str, max_attachments: int, connect_deadline: float) -> None:
        self.eio_sid = eio_sid
        self.decoder = Decoder(max_attachments=max_attachments)
        self.sockets: dict[str, _Socket] = {}  # namespace -> socket
        self.pending: dict[str, tuple[Any, _Socket]] = {}  # namespace -> (auth, socket), deferred
        self.connect_deadline: float | None = connect_deadline
        self.open = True


_EVENT = PacketType.EVENT


class SocketIOServer:
    def __init__(
        self,
        transport: EngineIOTransport,
        config: SocketIOConfig | None = None,
        adapter: Adapter | None = None,
        *,
        prepare: Callable[[str | bytes], Any] | None = None,
        namespace_resolver: Callable[[str], NamespaceConfig | None] | None = None,
    ) -> None:
        """``prepare`` turns an encoded message into what the transport sends for a
        broadcast (the trio driver passes ``engineio.PreparedPacket`` so a WebSocket frame
        is built once for every receiver). ``namespace_resolver`` is asked about a
        namespace that was not added (dynamic namespaces): ``None`` means it does not
        exist."""
        self.transport = transport
        self.config = config or SocketIOConfig()
        self.adapter = adapter or InMemoryAdapter()
        self.prepare = prepare
        self.namespace_resolver = namespace_resolver
        self._namespaces: dict[str, NamespaceConfig] = dict(self.config.namespaces)
        # Ack ids are counted per namespace, as Node does (``nsp._ids``): a broadcast that
        # expects acks can then use one id, and one encoded packet, for all its receivers.
        self._ack_ids: dict[str, int] = {}
        self._connections: dict[str, _Connection] = {}
        self._sockets: dict[str, _Socket] = {}  # socket id -> socket
        self._events: list[Event] = []
        self._event_waker: Callable[[], None] | None = None
        self._deadlines: list[tuple[float, int, str]] = []
        self._counter = itertools.count()
        #: Connection state recovery store (``None`` when recovery is off).
        self.recovery: RecoveryStore | None = None
        if self.config.recovery is not None:
            self.recovery = RecoveryStore(self.config.recovery)
        self._now = 0.0  # the latest time a caller told us (packets recorded by emit)

    # ------------------------------------------------------------------ namespaces

    def add_namespace(self, namespace: str, config: NamespaceConfig | None = None) -> None:
        if not namespace.startswith("/"):
            raise ValueError("a namespace starts with '/'")
        self._namespaces[namespace] = config or NamespaceConfig()

    # ------------------------------------------------------------------ Engine.IO side

    def handle_engineio_event(self, event: eio.Event, now: float) -> None:
        if isinstance(event, eio.Connected):
            self.engineio_connected(event.sid, now)
        elif isinstance(event, eio.MessageReceived):
            self.engineio_message(event.sid, event.data, now)
        elif isinstance(event, eio.Disconnected):
            self.engineio_disconnected(event.sid, event.reason.value)

    def engineio_connected(self, eio_sid: str, now: float) -> None:
        self._now = now
        deadline = now + self.config.connect_timeout_ms / 1000
        self._connections[eio_sid] = _Connection(eio_sid, self.config.max_attachments, deadline)
        heapq.heappush(self._deadlines, (deadline, next(self._counter), eio_sid))

    def engineio_disconnected(self, eio_sid: str, reason: str, now: float | None = None) -> None:
        """``now`` dates a kept session (connection state recovery; default: the latest
        time this core was given)."""
        if now is not None:
            self._now = now
        connection = self._connections.pop(eio_sid, None)
        if connection is not None:
            connection.open = False
            self._drop_sockets(connection, reason)

    def engineio_message(self, eio_sid: str, data: str | bytes, now: float) -> None:
        self._now = now
        connection = self._connections.get(eio_sid)
        if connection is None or not connection.open:
            return
        try:
            packet = connection.decoder.receive(data)
        except SocketIODecodeError:
            self._close_connection(connection, "parse error", now)
            return
        if packet is not None:
            self._on_packet(connection, packet, now)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        while self._deadlines:
            deadline, _, eio_sid = self._deadlines[0]
            connection = self._connections.get(eio_sid)
            if connection is not None and connection.connect_deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)
        return None

    def handle_timers(self, now: float) -> None:
        self._now = now
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, eio_sid = heapq.heappop(self._deadlines)
            connection = self._connections.get(eio_sid)
            if connection is not None and connection.connect_deadline == deadline and not connection.sockets:
                self._close_connection(connection, "connect timeout", now)

    # ------------------------------------------------------------------ application API

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def set_event_waker(self, waker: Callable[[], None] | None) -> None:
        self._event_waker = waker

    def emit(self, sid: str, event: str, *args: Any, with_ack: bool = False, volatile: bool = False) -> int | None:
        """Send an event to one socket. With ``with_ack`` returns the ack id the client's
        answer will carry (an :class:`AckReceived`)."""
        if event in RESERVED_EVENTS:
            raise ValueError(f"{event!r} is a reserved event name")
        socket = self._sockets.get(sid)
        if socket is None:
            return None
        ack_id: int | None = None
        if with_ack:
            ack_id = self._next_ack_id(socket.namespace)
            socket.pending_acks.add(ack_id)
        recovery = self.recovery
        if recovery is not None and ack_id is None and not volatile:
            # Kept for replay, as a broadcast to the socket's own room (Node does the same).
            messages = _encode(PacketType.EVENT, socket.namespace, [event, *args, recovery.next_offset()], None)
            recovery.record(BroadcastOptions(socket.namespace, frozenset((sid,))), messages, self._now)
        else:
            messages = _encode(PacketType.EVENT, socket.namespace, [event, *args], ack_id)
        self._deliver_socket(socket, messages, volatile)
        return ack_id

    def cancel_ack(self, sid: str, ack_id: int) -> None:
        """Forget an expected ack (the caller stopped waiting): a late answer is ignored."""
        socket = self._sockets.get(sid)
        if socket is not None:
            socket.pending_acks.discard(ack_id)

    def ack(self, sid: str, ack_id: int, *args: Any) -> None:
        """Answer an :class:`EventReceived` that carried ``ack_id``."""
        socket = self._sockets.get(sid)
        if socket is not None:
            messages = _encode(PacketType.ACK, socket.namespace, list(args), ack_id)
            if socket.held is None and len(messages) == 1:
                self.transport.send(socket.eio_sid, messages[0])
            else:
                self._deliver_socket(socket, messages)

    def broadcast(
        self,
        namespace: str,
        event: str,
        *args: Any,
        rooms: Sequence[str] = (),
        except_rooms: Sequence[str] = (),
        except_sids: Sequence[str] = (),
        volatile: bool = False,
    ) -> int:
        """Send one event to many sockets. The packet is encoded once and the same
        message objects are handed to every target. Returns the number of targets."""
        _, targets = self._broadcast(namespace, event, args, rooms, except_rooms, except_sids, volatile, False)
        return len(targets)

    def broadcast_with_ack(
        self,
        namespace: str,
        event: str,
        *args: Any,
        rooms: Sequence[str] = (),
        except_rooms: Sequence[str] = (),
        except_sids: Sequence[str] = (),
        volatile: bool = False,
    ) -> tuple[int, list[str]]:
        """Like :meth:`broadcast`, expecting an ack from every receiver: one ack id, one
        encoded packet. Returns ``(ack_id, socket ids reached)``; each answer arrives as an
        :class:`AckReceived` (use :meth:`cancel_ack` for the ones no longer awaited)."""
        ack_id, targets = self._broadcast(namespace, event, args, rooms, except_rooms, except_sids, volatile, True)
        assert ack_id is not None
        return ack_id, targets

    def _broadcast(
        self,
        namespace: str,
        event: str,
        args: Sequence[Any],
        rooms: Sequence[str],
        except_rooms: Sequence[str],
        except_sids: Sequence[str],
        volatile: bool,
        with_ack: bool,
    ) -> tuple[int | None, list[str]]:
        if event in RESERVED_EVENTS:
            raise ValueError(f"{event!r} is a reserved event name")
        ack_id = self._next_ack_id(namespace) if with_ack else None
        recovery = self.recovery
        if recovery is not None and ack_id is None and not volatile:
            # The offset is the packet's last data element (Node's SessionAwareAdapter).
            messages: Sequence[Any] = _encode(PacketType.EVENT, namespace, [event, *args, recovery.next_offset()], None)
        else:
            recovery = None
            messages = _encode(PacketType.EVENT, namespace, [event, *args], ack_id)
        options = BroadcastOptions(
            namespace, frozenset(rooms), frozenset(except_rooms), frozenset(except_sids), volatile
        )
        if recovery is not None:
            recovery.record(options, messages, self._now)
        if self.prepare is not None:
            messages = [self.prepare(message) for message in messages]
        reached: list[str] = []
        sockets = self._sockets
        send = self.transport.send
        single = messages[0] if len(messages) == 1 else None

        def deliver(sid: str, encoded: Sequence[Any]) -> None:
            socket = sockets.get(sid)
            if socket is not None and socket.namespace == namespace:
                if ack_id is not None:
                    socket.pending_acks.add(ack_id)
                if single is not None and socket.held is None and encoded is messages:
                    send(socket.eio_sid, single, volatile=volatile)  # the common case, inlined
                else:
                    self._deliver_socket(socket, encoded, volatile)
                reached.append(sid)

        self.adapter.broadcast(messages, options, deliver)
        return ack_id, reached

    def deliver_broadcast(self, messages: Sequence[Any], options: BroadcastOptions) -> int:
        """Deliver an already-encoded broadcast to the local targets only (a broadcast
        published by another node, see ``adapter``). Returns the number of targets."""
        count = 0
        for sid in self.adapter.targets(options):
            socket = self._sockets.get(sid)
            if socket is not None and socket.namespace == options.namespace:
                self._deliver_socket(socket, messages, options.volatile)
                count += 1
        return count

    def _next_ack_id(self, namespace: str) -> int:
        ack_id = self._ack_ids.get(namespace, 0)
        self._ack_ids[namespace] = ack_id + 1 if ack_id < MAX_ACK_ID else 0
        return ack_id

    def join(self, sid: str, room: str) -> None:
        socket = self._sockets.get(sid)
        if socket is not None:
            self.adapter.join(socket.namespace, sid, room)

    def leave(self, sid: str, room: str) -> None:
        socket = self._sockets.get(sid)
        if socket is not None:
            self.adapter.leave(socket.namespace, sid, room)

    def rooms(self, sid: str) -> frozenset[str]:
        socket = self._sockets.get(sid)
        return self.adapter.rooms_of(socket.namespace, sid) if socket is not None else frozenset()

    def disconnect(self, sid: str) -> None:
        """Server-side namespace disconnect: sends ``41[/nsp,]``; the client reports
        "io server disconnect". The Engine.IO connection stays open."""
        socket = self._sockets.get(sid)
        if socket is None:
            return
        if socket.held is not None:
            return  # still being decided: refuse_connect is the way to say no
        self._deliver_socket(socket, encode_packet(Packet(PacketType.DISCONNECT, socket.namespace)))
        connection = self._connections.get(socket.eio_sid)
        if connection is not None:
            connection.sockets.pop(socket.namespace, None)
        self._remove_socket(socket, "server namespace disconnect")

    def accept_connect(self, eio_sid: str, namespace: str) -> str | None:
        """Accept a deferred CONNECT; returns the new socket id (``None`` if the
        connection went away meanwhile)."""
        connection = self._connections.get(eio_sid)
        if connection is None or namespace not in connection.pending:
            return None
        auth, socket = connection.pending.pop(namespace)
        self._accept(connection, socket, auth)
        return socket.sid

    def refuse_connect(self, eio_sid: str, namespace: str, refusal: ConnectRefused) -> None:
        connection = self._connections.get(eio_sid)
        if connection is None:
            return
        entry = connection.pending.pop(namespace, None)
        if entry is not None:
            self._discard_pending(entry[1])
            self._send_connect_error(connection, namespace, refusal)

    def close_connection(self, eio_sid: str, now: float) -> None:
        self._now = now
        connection = self._connections.get(eio_sid)
        if connection is not None:
            self._close_connection(connection, "server shutting down", now)

    def socket_data(self, sid: str) -> Any:
        """The application data kept with a socket's session (``None`` if unknown)."""
        socket = self._sockets.get(sid)
        return socket.data if socket is not None else None

    def set_socket_data(self, sid: str, data: Any) -> None:
        """Set the data a kept session carries (connection state recovery gives it back)."""
        socket = self._sockets.get(sid)
        if socket is not None:
            socket.data = data

    def socket_info(self, sid: str) -> tuple[str, str] | None:
        """``(namespace, eio_sid)`` of a connected socket."""
        socket = self._sockets.get(sid)
        return (socket.namespace, socket.eio_sid) if socket is not None else None

    # ------------------------------------------------------------------ internals

    def _emit_event(self, event: Event) -> None:
        self._events.append(event)
        if self._event_waker is not None:
            self._event_waker()

    def _deliver_socket(self, socket: _Socket, messages: Sequence[Any], volatile: bool = False) -> None:
        if socket.held is not None:
            if not volatile:  # a volatile emit to a socket that cannot receive yet is dropped
                socket.held.append(messages)
            return
        self._deliver(socket.eio_sid, messages, volatile)

    def _deliver(self, eio_sid: str, messages: Sequence[Any], volatile: bool = False) -> None:
        # Only the first message of a binary packet may be dropped (volatile): once the
        # header is out, its attachments must follow or the client's decoder desyncs.
        send = self.transport.send
        if not send(eio_sid, messages[0], volatile=volatile):
            return
        for index in range(1, len(messages)):
            send(eio_sid, messages[index])

    def _close_connection(self, connection: _Connection, reason: str, now: float) -> None:
        connection.open = False
        self._connections.pop(connection.eio_sid, None)
        self._drop_sockets(connection, reason)
        self.transport.close(connection.eio_sid, now)

    def _drop_sockets(self, connection: _Connection, reason: str) -> None:
        for _, pending in connection.pending.values():
            self._discard_pending(pending)
        connection.pending.clear()
        sockets = list(connection.sockets.values())
        connection.sockets.clear()
        for socket in sockets:
            self._remove_socket(socket, reason)

    def _discard_pending(self, socket: _Socket) -> None:
        # Never connected: no SocketDisconnected, but no room may keep it either.
        if self._sockets.get(socket.sid) is socket:
            del self._sockets[socket.sid]
        socket.held = None
        self.adapter.leave_all(socket.namespace, socket.sid)

    def _remove_socket(self, socket: _Socket, reason: str) -> None:
        recovery = self.recovery
        if recovery is not None and socket.connected and socket.pid is not None and reason in RECOVERABLE_REASONS:
            rooms = tuple(self.adapter.rooms_of(socket.namespace, socket.sid))
            recovery.persist(SavedSession(socket.sid, socket.pid, socket.namespace, rooms, socket.data, self._now))
        socket.connected = False
        self._sockets.pop(socket.sid, None)
        self.adapter.leave_all(socket.namespace, socket.sid)
        self._emit_event(SocketDisconnected(socket.sid, socket.namespace, reason))

    def _on_packet(self, connection: _Connection, packet: Packet, now: float) -> None:
        socket = connection.sockets.get(packet.namespace)
        packet_type = packet.type
        if packet_type is _EVENT and socket is not None:
            # The everyday packet first (a plain event on a connected namespace).
            data = packet.data
            self._emit_event(EventReceived(socket.sid, socket.namespace, data[0], data[1:], packet.id))
            return
        if packet_type is PacketType.CONNECT:
            if socket is not None or packet.namespace in connection.pending:
                self._close_connection(connection, "invalid state", now)
            else:
                self._connect(connection, packet)
            return
        if socket is None or packet.type is PacketType.CONNECT_ERROR:
            self._close_connection(connection, "invalid state", now)
            return
        if packet.type in (PacketType.EVENT, PacketType.BINARY_EVENT):
            event, *args = packet.data
            self._emit_event(EventReceived(socket.sid, socket.namespace, event, args, packet.id))
        elif packet.type in (PacketType.ACK, PacketType.BINARY_ACK):
            if packet.id is not None and packet.id in socket.pending_acks:
                socket.pending_acks.discard(packet.id)
                self._emit_event(AckReceived(socket.sid, socket.namespace, packet.id, packet.data))
            # an unknown ack id is ignored, as Node does
        elif packet.type is PacketType.DISCONNECT:
            del connection.sockets[packet.namespace]
            self._remove_socket(socket, "client namespace disconnect")

    def _connect(self, connection: _Connection, packet: Packet) -> None:
        namespace = packet.namespace
        config = self._namespaces.get(namespace)
        if config is None and self.namespace_resolver is not None:
            config = self.namespace_resolver(namespace)
        if config is None:
            self._send_connect_error(connection, namespace, ConnectRefused(INVALID_NAMESPACE))
            return
        auth = packet.data if packet.data is not None else {}
        restored, refused = self._restore(auth, namespace)
        if config.authorize is not None:
            decision = config.authorize(ConnectAttempt(connection.eio_sid, namespace, auth))
            if isinstance(decision, _Defer):
                socket = self._new_socket(connection, namespace, restored)
                connection.pending[namespace] = (auth, socket)
                self._emit_event(
                    ConnectRequested(connection.eio_sid, namespace, auth, socket.sid, restored is not None, refused)
                )
                return
            if decision is not None:
                self._send_connect_error(connection, namespace, decision)
                return
        self._accept(connection, self._new_socket(connection, namespace, restored), auth)

    def _restore(self, auth: Any, namespace: str) -> tuple[RestoredSession | None, str | None]:
        """Connection state recovery: the session a CONNECT's ``pid``/``offset`` ask for,
        or why not (both ``None`` when not asked, or recovery is off)."""
        if self.recovery is None or not isinstance(auth, dict):
            return None, None
        pid, offset = auth.get("pid"), auth.get("offset")
        if not isinstance(pid, str) or not isinstance(offset, str):
            return None, None
        result = self.recovery.restore(pid, offset, namespace, self._now)
        if isinstance(result, str):
            return None, result
        if result.sid in self._sockets:  # pragma: no cover - a session is restored once
            return None, "unknown session"
        return result, None

    def _new_socket(self, connection: _Connection, namespace: str, restored: RestoredSession | None = None) -> _Socket:
        if restored is not None:
            socket = _Socket(restored.sid, namespace, connection.eio_sid)
            socket.pid = restored.pid
            socket.data = restored.data
            for room in restored.rooms:
                self.adapter.join(namespace, socket.sid, room)
            # The missed packets go out right after the CONNECT answer, before anything new.
            socket.held = list(restored.missed)
            self._sockets[socket.sid] = socket
            return socket
        sid = secrets.token_urlsafe(15)
        while sid in self._sockets or sid == connection.eio_sid:  # pragma: no cover - 120 random bits
            sid = secrets.token_urlsafe(15)
        socket = _Socket(sid, namespace, connection.eio_sid)
        socket.held = []
        if self.recovery is not None:
            socket.pid = secrets.token_urlsafe(15)
        self._sockets[sid] = socket
        return socket

    def _accept(self, connection: _Connection, socket: _Socket, auth: Any) -> None:
        sid, namespace = socket.sid, socket.namespace
        held, socket.held = socket.held, None
        connection.sockets[namespace] = socket
        connection.connect_deadline = None
        socket.connected = True
        self.adapter.join(namespace, sid, sid)  # every socket is in the room named after its id
        answer = {"sid": sid} if socket.pid is None else {"sid": sid, "pid": socket.pid}
        self._deliver(connection.eio_sid, encode_packet(Packet(PacketType.CONNECT, namespace, answer)))
        for messages in held or ():
            self._deliver(connection.eio_sid, messages)
        self._emit_event(SocketConnected(sid, namespace, connection.eio_sid, auth))

    def _send_connect_error(self, connection: _Connection, namespace: str, refusal: ConnectRefused) -> None:
        payload: dict[str, Any] = {"message": refusal.message}
        if refusal.data is not None:
            payload["data"] = refusal.data
        self._deliver(connection.eio_sid, encode_packet(Packet(PacketType.CONNECT_ERROR, namespace, payload)))
