"""A sans-I/O Socket.IO v5 client core: namespaces, events, acks, send buffer.

One :class:`SocketIOClient` plays the part of the JS client's ``Manager`` plus its
namespace sockets. It lives across Engine.IO connections: a reconnecting driver opens a
new Engine.IO connection and tells the core, which then rejoins the namespaces that are
still wanted, keeps the ack counters and flushes what was buffered meanwhile.

Driving it::

    core = SocketIOClient()
    core.add_namespace("/")                       # namespaces the application wants

    # every time an Engine.IO connection opens:
    core.engineio_opened()
    for namespace in core.namespaces_to_join():
        core.connect(namespace, auth_for(namespace))   # queues 40[/nsp,][auth]
    # every Engine.IO message:
    events = core.receive(message)                # ClientConnected, ClientEventReceived...
    if core.close_reason is not None: close the Engine.IO connection (server broke the protocol)
    # when the Engine.IO connection ends:
    events = core.engineio_closed(reason)         # "transport close", "ping timeout"...
    # after every call, send core.data_to_send() over Engine.IO, in order, without
    # interleaving two calls' messages (a binary packet is several messages).

Application side: :meth:`SocketIOClient.emit` (with ``ack=True`` returns the ack id that
a later :class:`ClientAckReceived` carries), :meth:`SocketIOClient.ack` answers a
:class:`ClientEventReceived`, :meth:`SocketIOClient.disconnect` leaves a namespace.

Rules (PROTOCOL-NOTES "Socket.IO v5", and MONO ``socket.io-client/lib/socket.ts``):

* a CONNECT answer must carry ``{"sid": <str>}``; one without it is reported as a connect
  error, as the JS client does (it means a Socket.IO v2 server);
* ``44[/nsp,]{"message":...,"data":...}`` refuses a namespace; a refused namespace is not
  retried on reconnect;
* ``41[/nsp,]`` from the server ends the namespace with reason "io server disconnect" and it
  is not rejoined on reconnect;
* any decode error closes the Engine.IO connection ("parse error") and the namespaces are
  rejoined on the next connection, as the JS manager does;
* packets for a namespace that is not connected, and acks with an unknown id, are ignored
  (JS ignores them too);
* ack ids count from 0 per namespace and are never reset by a reconnect.

Send buffer: an emit while its namespace is not connected (Engine.IO down, reconnecting,
CONNECT not yet answered) is encoded at once and kept, up to ``buffer_limit`` packets per
namespace; when that is full :class:`SendBufferFullError` is raised: nothing is ever
dropped silently. The buffer is flushed in emit order right after the CONNECT answer.
Volatile emits are dropped instead of buffered. An emit to a namespace that ended for
good (refused, disconnected by either side) raises :class:`SocketIODisconnectedError`.

Acks that can no longer be answered are reported with :class:`ClientAcksFailed`: acks of
packets already sent when the connection drops, and every buffered one when the
namespace ends for good. Buffered packets survive a reconnect together with their acks.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any, Union

from ..errors import VolleyError
from .packets import (
    DEFAULT_MAX_ATTACHMENTS,
    MAX_ACK_ID,
    RESERVED_EVENTS,
    Decoder,
    Packet,
    PacketType,
    SocketIODecodeError,
    encode_packet,
)

__all__ = [
    "DEFAULT_BUFFER_LIMIT",
    "V2_SERVER_MESSAGE",
    "ClientAckReceived",
    "ClientAcksFailed",
    "ClientConnectRefused",
    "ClientConnected",
    "ClientDisconnected",
    "ClientEventReceived",
    "ClientSocketIOEvent",
    "NamespaceState",
    "SendBufferFullError",
    "SocketIOClient",
    "SocketIOConnectError",
    "SocketIODisconnectedError",
]

#: Packets kept per namespace while it is not connected.
DEFAULT_BUFFER_LIMIT = 1024
#: Events a server may send for a namespace before answering its CONNECT (a Node server
#: replays missed packets first, connection state recovery); more is a protocol error.
MAX_EARLY_EVENTS = 100_000

#: The JS client's connect_error message for a CONNECT answer without ``sid``.
V2_SERVER_MESSAGE = (
    "It seems you are trying to reach a Socket.IO server in v2.x with a v3.x client, "
    "but they are not compatible (more information here: "
    "https://socket.io/docs/v3/migrating-from-2-x-to-3-0/)"
)

# Disconnect reasons (the JS client's strings).
IO_SERVER_DISCONNECT = "io server disconnect"
IO_CLIENT_DISCONNECT = "io client disconnect"
PARSE_ERROR = "parse error"


# ------------------------------------------------------------------------------ errors


class SocketIOConnectError(VolleyError):
    """The server refused a namespace (``44``), its CONNECT answer was invalid, or the
    server could not be reached at all (``refused`` is then False).

    ``message`` and ``data`` are the refusal's (``data`` is ``None`` when absent), as the
    JS client's ``connect_error`` Error has them; for an unreachable server ``message``
    says what failed and the transport's exception is the ``__cause__``.
    """

    def __init__(self, namespace: str, message: str, data: Any = None, *, refused: bool = True) -> None:
        if refused:
            super().__init__(f"connection to namespace {namespace!r} refused: {message}")
        else:
            super().__init__(message)
        self.refused = refused
        self.namespace = namespace
        self.message = message
        self.data = data


class SocketIODisconnectedError(VolleyError):
    """The namespace is gone (or went away before an ack arrived); ``reason`` says why:
    "io server disconnect", "io client disconnect", "transport close", "ping timeout",
    "parse error", "connect error", ..."""

    def __init__(self, namespace: str, reason: str) -> None:
        super().__init__(f"namespace {namespace!r} disconnected: {reason}")
        self.namespace = namespace
        self.reason = reason


class SendBufferFullError(VolleyError):
    """An emit was made while the namespace is not connected and its send buffer already
    holds ``limit`` packets. Nothing was queued."""

    def __init__(self, namespace: str, limit: int) -> None:
        super().__init__(
            f"send buffer of namespace {namespace!r} is full ({limit} packets while not connected)"
        )
        self.namespace = namespace
        self.limit = limit


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class ClientConnected:
    """``recovered``: connection state recovery gave this namespace its earlier socket id,
    rooms and data back (the events it missed follow, before anything new)."""

    namespace: str
    sid: str
    recovered: bool = False


@dataclass(frozen=True, slots=True)
class ClientConnectRefused:
    """A ``44`` refusal (or an invalid CONNECT answer). The namespace will not be rejoined."""

    namespace: str
    message: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class ClientEventReceived:
    """``ack_id`` is set when the server expects an answer: call :meth:`SocketIOClient.ack`
    with this event's ``sid`` (an answer for an older connection of the namespace is dropped)."""

    namespace: str
    sid: str
    event: str | int | float
    args: list[Any]
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class ClientAckReceived:
    namespace: str
    ack_id: int
    args: list[Any]


@dataclass(frozen=True, slots=True)
class ClientDisconnected:
    """``final`` is true when the namespace will not be rejoined on reconnect."""

    namespace: str
    reason: str
    final: bool


@dataclass(frozen=True, slots=True)
class ClientAcksFailed:
    """These acks will never arrive (``reason`` as in :class:`ClientDisconnected`)."""

    namespace: str
    ack_ids: tuple[int, ...]
    reason: str


ClientSocketIOEvent = Union[
    ClientConnected, ClientConnectRefused, ClientEventReceived, ClientAckReceived,
    ClientDisconnected, ClientAcksFailed,
]


# ------------------------------------------------------------------------------ state


class NamespaceState(enum.Enum):
    DISCONNECTED = "disconnected"  # no Engine.IO connection yet, or it dropped
    CONNECTING = "connecting"  # CONNECT sent, no answer yet
    CONNECTED = "connected"
    # disconnect() while the CONNECT was unanswered: sending 41 before the server accepted
    # would be "invalid state" for Node and close the whole connection, so a late
    # acceptance is answered with 41 instead. Ended, as far as the application sees.
    LEAVING = "leaving"
    ENDED = "ended"  # refused or disconnected on purpose: not rejoined


class _Buffered:
    __slots__ = ("messages", "ack_id")

    def __init__(self, messages: list[str | bytes], ack_id: int | None) -> None:
        self.messages = messages
        self.ack_id = ack_id


class _Namespace:
    __slots__ = (
        "name", "state", "sid", "next_ack_id", "sent_acks", "buffer", "end_reason",
        "pid", "offset", "recovered", "early",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = NamespaceState.DISCONNECTED
        self.sid: str | None = None
        self.next_ack_id = 0
        self.sent_acks: set[int] = set()
        self.buffer: deque[_Buffered] = deque()
        self.end_reason: str | None = None
        # Connection state recovery: the private session id of the CONNECT answer and
        # the offset of the last event received (sent back on the next CONNECT).
        self.pid: str | None = None
        self.offset: str | None = None
        self.recovered = False
        # Events that arrive before the CONNECT answer (a Node server replays missed
        # packets first): handed out right after it, as the JS client does.
        self.early: list[Packet] = []


class SocketIOClient:
    """The sans-I/O client core (see the module docstring for how to drive it)."""

    def __init__(
        self,
        *,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        max_attachments: int = DEFAULT_MAX_ATTACHMENTS,
    ) -> None:
        if buffer_limit < 0:
            raise ValueError("buffer_limit must be >= 0")
        self.buffer_limit = buffer_limit
        self.max_attachments = max_attachments
        self._namespaces: dict[str, _Namespace] = {}
        self._decoder = Decoder(max_attachments=max_attachments)
        self._outgoing: list[str | bytes] = []
        self._open = False
        self._close_reason: str | None = None

    # ------------------------------------------------------------------ inspection

    @property
    def engineio_open(self) -> bool:
        return self._open

    @property
    def close_reason(self) -> str | None:
        """Set when the server broke the protocol (the driver must then close Engine.IO)."""
        return self._close_reason

    def state(self, namespace: str) -> NamespaceState | None:
        ns = self._namespaces.get(namespace)
        return ns.state if ns is not None else None

    def recovered(self, namespace: str = "/") -> bool:
        """Whether the namespace's current connection recovered the previous one's state."""
        ns = self._namespaces.get(namespace)
        return ns is not None and ns.state is NamespaceState.CONNECTED and ns.recovered

    def sid(self, namespace: str = "/") -> str | None:
        """The namespace socket id while connected (distinct from the Engine.IO sid)."""
        ns = self._namespaces.get(namespace)
        return ns.sid if ns is not None else None

    def end_reason(self, namespace: str) -> str | None:
        ns = self._namespaces.get(namespace)
        return ns.end_reason if ns is not None else None

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def active_namespaces(self) -> list[str]:
        """Namespaces that are connected or will be (re)joined."""
        return [
            ns.name for ns in self._namespaces.values()
            if ns.state not in (NamespaceState.ENDED, NamespaceState.LEAVING)
        ]

    def namespaces_to_join(self) -> list[str]:
        """Wanted namespaces with no CONNECT in flight on the current Engine.IO connection."""
        return [ns.name for ns in self._namespaces.values() if ns.state is NamespaceState.DISCONNECTED]

    def buffered(self, namespace: str) -> int:
        ns = self._namespaces.get(namespace)
        return len(ns.buffer) if ns is not None else 0

    def data_to_send(self) -> list[str | bytes]:
        """Engine.IO messages to send, in order (a binary packet is several messages)."""
        out, self._outgoing = self._outgoing, []
        return out

    # ------------------------------------------------------------------ Engine.IO side

    def engineio_opened(self) -> None:
        """A new Engine.IO connection is open: reset the decoder; the driver then calls
        :meth:`connect` for every namespace in :meth:`namespaces_to_join`."""
        self._open = True
        self._close_reason = None
        self._decoder = Decoder(max_attachments=self.max_attachments)
        self._outgoing = []

    def engineio_closed(self, reason: str) -> list[ClientSocketIOEvent]:
        """The Engine.IO connection ended (``reason``: "transport close", "ping timeout",
        "transport error", "forced close"...). Connected namespaces report a
        disconnect; they are rejoined on the next connection."""
        events: list[ClientSocketIOEvent] = []
        if not self._open:
            return events
        self._open = False
        self._outgoing = []
        self._drop_connection(reason, events)
        return events

    def receive(self, message: str | bytes) -> list[ClientSocketIOEvent]:
        """Feed one Engine.IO message from the server."""
        events: list[ClientSocketIOEvent] = []
        if not self._open or self._close_reason is not None:
            return events
        try:
            packet = self._decoder.receive(message)
        except SocketIODecodeError:
            # Node and the JS client close the whole connection on any decode error.
            self._close_reason = PARSE_ERROR
            self._outgoing = []
            self._drop_connection(PARSE_ERROR, events)
            return events
        if packet is not None:
            self._on_packet(packet, events)
        return events

    # ------------------------------------------------------------------ application side

    def add_namespace(self, namespace: str) -> None:
        """Want ``namespace``: joined on the next Engine.IO connection (or now, by
        :meth:`connect`). Re-adding an ended namespace makes it wanted again."""
        if not namespace.startswith("/"):
            raise ValueError("a namespace starts with '/'")
        ns = self._namespaces.get(namespace)
        if ns is None:
            self._namespaces[namespace] = _Namespace(namespace)
        elif ns.state is NamespaceState.ENDED:
            ns.state = NamespaceState.DISCONNECTED
            ns.end_reason = None
        elif ns.state is NamespaceState.LEAVING:
            ns.state = NamespaceState.CONNECTING  # the CONNECT in flight serves again
            ns.end_reason = None

    def connect(self, namespace: str, auth: dict[str, Any] | None = None) -> None:
        """Send ``CONNECT`` (with the auth payload) for a wanted namespace on the open
        Engine.IO connection."""
        if auth is not None and not isinstance(auth, dict):
            raise TypeError("the auth payload must be a dict (a JSON object)")
        if not self._open:
            raise RuntimeError("no Engine.IO connection is open")
        self.add_namespace(namespace)
        ns = self._namespaces[namespace]
        if ns.state is not NamespaceState.DISCONNECTED:
            raise RuntimeError(f"namespace {namespace!r} is {ns.state.value}")
        if ns.pid is not None:  # ask for connection state recovery (the JS client's format)
            recovery: dict[str, Any] = {"pid": ns.pid}
            if ns.offset is not None:
                recovery["offset"] = ns.offset
            auth = {**recovery, **(auth or {})}
        ns.early = []
        self._outgoing.extend(encode_packet(Packet(PacketType.CONNECT, namespace, auth)))
        ns.state = NamespaceState.CONNECTING

    def emit(
        self, namespace: str, event: str, *args: Any, ack: bool = False, volatile: bool = False
    ) -> int | None:
        """Send (or buffer) an event. Returns the ack id with ``ack=True``.

        Returns ``None`` without sending a volatile emit while not connected. Raises
        :class:`SendBufferFullError`, :class:`SocketIODisconnectedError` (namespace ended
        or unknown), ``ValueError`` for a reserved event name or ``ack`` with ``volatile``,
        and :class:`~volleyio.socketio.SocketIOEncodeError` for data JSON cannot carry.
        """
        if event in RESERVED_EVENTS:
            raise ValueError(f"{event!r} is a reserved event name")
        if ack and volatile:
            raise ValueError("a volatile emit cannot wait for an ack (it may be dropped)")
        ns = self._namespaces.get(namespace)
        if ns is None:
            raise SocketIODisconnectedError(namespace, "namespace was never joined")
        if ns.state in (NamespaceState.ENDED, NamespaceState.LEAVING):
            raise SocketIODisconnectedError(namespace, ns.end_reason or IO_CLIENT_DISCONNECT)
        connected = ns.state is NamespaceState.CONNECTED
        if volatile and not connected:
            return None
        if not connected and len(ns.buffer) >= self.buffer_limit:
            raise SendBufferFullError(namespace, self.buffer_limit)
        ack_id = ns.next_ack_id if ack else None
        messages = encode_packet(Packet(PacketType.EVENT, namespace, [event, *args], ack_id))
        if ack_id is not None:
            ns.next_ack_id = ack_id + 1 if ack_id < MAX_ACK_ID else 0
        if connected:
            self._outgoing.extend(messages)
            if ack_id is not None:
                ns.sent_acks.add(ack_id)
        else:
            ns.buffer.append(_Buffered(messages, ack_id))
        return ack_id

    def ack(self, namespace: str, sid: str, ack_id: int, *args: Any) -> bool:
        """Answer a :class:`ClientEventReceived`; dropped (``False``) if the namespace is no
        longer connected with socket id ``sid``."""
        ns = self._namespaces.get(namespace)
        if ns is None or ns.state is not NamespaceState.CONNECTED or ns.sid != sid:
            return False
        self._outgoing.extend(encode_packet(Packet(PacketType.ACK, namespace, list(args), ack_id)))
        return True

    def cancel_ack(self, namespace: str, ack_id: int) -> None:
        """Forget an ack nobody waits for any more; a still-buffered packet is not sent
        at all (the JS client does the same when an ack times out)."""
        ns = self._namespaces.get(namespace)
        if ns is None:
            return
        ns.sent_acks.discard(ack_id)
        for item in ns.buffer:
            if item.ack_id == ack_id:
                ns.buffer.remove(item)
                break

    def disconnect(self, namespace: str) -> list[ClientSocketIOEvent]:
        """Leave a namespace ("io client disconnect"); it is not rejoined. The driver
        closes Engine.IO once :meth:`active_namespaces` is empty."""
        events: list[ClientSocketIOEvent] = []
        ns = self._namespaces.get(namespace)
        if ns is None or ns.state in (NamespaceState.ENDED, NamespaceState.LEAVING):
            return events
        state = ns.state
        if state is NamespaceState.CONNECTED:
            self._outgoing.extend(encode_packet(Packet(PacketType.DISCONNECT, namespace)))
            events.append(ClientDisconnected(namespace, IO_CLIENT_DISCONNECT, True))
        self._end(ns, IO_CLIENT_DISCONNECT, events)
        if state is NamespaceState.CONNECTING:
            ns.state = NamespaceState.LEAVING
        return events

    # ------------------------------------------------------------------ internals

    def _drop_connection(self, reason: str, events: list[ClientSocketIOEvent]) -> None:
        """The Engine.IO connection is gone (or about to be): wanted namespaces wait for
        the next one, with their buffers; acks already sent are lost."""
        for ns in self._namespaces.values():
            if ns.state is NamespaceState.CONNECTED:
                ns.state = NamespaceState.DISCONNECTED
                ns.sid = None
                events.append(ClientDisconnected(ns.name, reason, False))
                if ns.sent_acks:
                    events.append(ClientAcksFailed(ns.name, tuple(sorted(ns.sent_acks)), reason))
                    ns.sent_acks.clear()
            elif ns.state is NamespaceState.CONNECTING:
                ns.state = NamespaceState.DISCONNECTED
            elif ns.state is NamespaceState.LEAVING:
                ns.state = NamespaceState.ENDED

    def _end(self, ns: _Namespace, reason: str, events: list[ClientSocketIOEvent]) -> None:
        """The namespace is over for good: fail every ack it still owes."""
        ns.state = NamespaceState.ENDED
        ns.sid = None
        ns.end_reason = reason
        ns.pid = ns.offset = None  # ended on purpose: the next join is a fresh one
        ns.early = []
        lost = sorted(ns.sent_acks) + [item.ack_id for item in ns.buffer if item.ack_id is not None]
        ns.sent_acks.clear()
        ns.buffer.clear()
        if lost:
            events.append(ClientAcksFailed(ns.name, tuple(lost), reason))

    def _on_packet(self, packet: Packet, events: list[ClientSocketIOEvent]) -> None:
        ns = self._namespaces.get(packet.namespace)
        if ns is None:
            return
        kind = packet.type
        state = ns.state
        if kind is PacketType.CONNECT:
            if state is NamespaceState.CONNECTING:
                self._on_connect(ns, packet, events)
            elif state is NamespaceState.LEAVING:
                ns.state = NamespaceState.ENDED
                self._outgoing.extend(encode_packet(Packet(PacketType.DISCONNECT, ns.name)))
            return
        if kind is PacketType.CONNECT_ERROR:
            if state is NamespaceState.CONNECTING:
                if isinstance(packet.data, dict):
                    message = packet.data.get("message")
                    text = message if isinstance(message, str) else ""
                    self._refuse(ns, text, packet.data.get("data"), events)
                else:  # a v4-style string refusal
                    self._refuse(ns, str(packet.data), None, events)
            elif state is NamespaceState.LEAVING:
                ns.state = NamespaceState.ENDED
            return
        if kind is PacketType.DISCONNECT:
            if state is NamespaceState.CONNECTED:
                events.append(ClientDisconnected(ns.name, IO_SERVER_DISCONNECT, True))
                self._end(ns, IO_SERVER_DISCONNECT, events)
            elif state is NamespaceState.CONNECTING:
                self._refuse(ns, IO_SERVER_DISCONNECT, None, events, reason=IO_SERVER_DISCONNECT)
            elif state is NamespaceState.LEAVING:
                ns.state = NamespaceState.ENDED
            return
        if state is NamespaceState.CONNECTING and kind in (PacketType.EVENT, PacketType.BINARY_EVENT):
            if len(ns.early) >= MAX_EARLY_EVENTS:  # bounded: a server that never answers
                self._close_reason = PARSE_ERROR
                self._outgoing = []
                self._drop_connection(PARSE_ERROR, events)
            else:
                ns.early.append(packet)
            return
        if state is not NamespaceState.CONNECTED or ns.sid is None:
            return
        if kind in (PacketType.EVENT, PacketType.BINARY_EVENT):
            self._event(ns, packet, events)
        elif kind in (PacketType.ACK, PacketType.BINARY_ACK):
            if packet.id is not None and packet.id in ns.sent_acks:
                ns.sent_acks.discard(packet.id)
                events.append(ClientAckReceived(ns.name, packet.id, packet.data))

    def _on_connect(self, ns: _Namespace, packet: Packet, events: list[ClientSocketIOEvent]) -> None:
        data = packet.data
        sid = data.get("sid") if isinstance(data, dict) else None
        if not isinstance(sid, str) or not sid:
            self._refuse(ns, V2_SERVER_MESSAGE, None, events)
            return
        pid = data.get("pid")
        pid = pid if isinstance(pid, str) else None
        ns.recovered = pid is not None and pid == ns.pid
        if pid != ns.pid:
            ns.offset = None
        ns.pid = pid
        ns.state = NamespaceState.CONNECTED
        ns.sid = sid
        events.append(ClientConnected(ns.name, sid, ns.recovered))
        early, ns.early = ns.early, []
        for early_packet in early:
            self._event(ns, early_packet, events)
        # the buffer goes out right behind the CONNECT answer, in emit order
        while ns.buffer:
            item = ns.buffer.popleft()
            self._outgoing.extend(item.messages)
            if item.ack_id is not None:
                ns.sent_acks.add(item.ack_id)

    def _event(self, ns: _Namespace, packet: Packet, events: list[ClientSocketIOEvent]) -> None:
        assert ns.sid is not None
        event, *args = packet.data
        events.append(ClientEventReceived(ns.name, ns.sid, event, args, packet.id))
        if ns.pid is not None and args and isinstance(args[-1], str):
            ns.offset = args[-1]  # the offset is the last element (as the JS client reads it)

    def _refuse(
        self, ns: _Namespace, message: str, data: Any, events: list[ClientSocketIOEvent],
        *, reason: str = "connect error",
    ) -> None:
        events.append(ClientConnectRefused(ns.name, message, data))
        self._end(ns, reason, events)
