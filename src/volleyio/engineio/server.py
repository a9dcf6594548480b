"""A sans-I/O Engine.IO v4 server: the session manager an HTTP/WebSocket layer drives.

Nothing here does I/O or reads a clock; every entry point that depends on time takes
``now`` (seconds, any monotonic origin) as an argument.

How an I/O layer drives it
--------------------------
1. Parse the HTTP request line and headers and call :meth:`EngineIOServer.handle_request`.
   The answer is one of:

   * :class:`HttpResponse` - write it and finish the request.
   * :class:`PollParked` - a long-polling GET with nothing to send yet. Register a waker
     with :meth:`EngineIOServer.set_poll_waker` (for example ``trio.Event().set``), then
     loop: ``response = server.poll_ready(sid, now)``; when it is ``None`` await the
     waker and try again. If the client goes away first call
     :meth:`EngineIOServer.poll_cancelled` (the session closes, as in Node).
   * :class:`ReadBody` - a POST was accepted for a session. Stream the body; as soon as
     more than ``limit`` bytes arrived call :meth:`EngineIOServer.post_too_large`
     (413); when complete call :meth:`EngineIOServer.post_body`; if the client
     disconnects mid-body call :meth:`EngineIOServer.post_aborted`.
   * :class:`AcceptWebSocket` - complete the WebSocket handshake (101). If
     ``close_immediately`` is set, close the new WebSocket right away (Node accepts then
     closes a second WebSocket for a sid that is upgrading or upgraded) and never touch
     ``channel``. Otherwise feed every received message to ``channel.receive`` and send
     what ``channel.take_outgoing()`` returns whenever the channel waker fires. An
     outgoing item is ``str`` (text frame), ``bytes`` (binary frame) or a
     :class:`PreparedPacket` (send its ``websocket_message``; the same frame bytes may be
     reused for every receiver through its ``frame_cache``).
   * :class:`RefuseWebSocket` - write ``raw_response()`` on the socket and close it.

2. Timers: sleep until :meth:`EngineIOServer.next_deadline` (or until woken because a
   new deadline was armed, see ``set_timer_waker``) and call
   :meth:`EngineIOServer.handle_timers`.

3. Application: take events with :meth:`EngineIOServer.take_events` (``set_event_waker``
   says when there are new ones) and use :class:`Session` (``server.session(sid)``) to
   send and close.

Backpressure policy
-------------------
Each session has a bounded outgoing buffer (``max_buffered_bytes``, default 1 MiB;
text counts its character length, binary its byte length). A ``send`` that would push
the buffer over the limit closes the session with reason ``"slow consumer"`` and
returns ``False``: a client that does not read is cut off rather than growing memory
without bound. ``send(..., volatile=True)`` instead drops the message (returns
``False``) when the transport is not writable right now, Node's rule for Socket.IO
volatile emits: over polling, no GET is parked or packets are already waiting; over
WebSocket, packets are already waiting (the I/O layer has not drained them yet); during
an upgrade probe, always.
``Session.buffered_amount`` lets a caller wait for the buffer to drain before sending.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import json
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Union
from ..origin import origin_allowed, same_origin
from .packets import (
    MAX_PACKETS_PER_PAYLOAD,
    EngineIOParseError,
    Packet,
    PacketType,
    PreparedPacket,
    decode_payload,
    decode_websocket_frame,
    encode_payload,
    encode_websocket_frame,
)

__all__ = [
    "AcceptWebSocket",
    "Connected",
    "CorsConfig",
    "Disconnected",
    "DisconnectReason",
    "EngineIOServer",
    "ErrorCode",
    "Event",
    "HttpRequest",
    "HttpResponse",
    "MessageReceived",
    "PollParked",
    "PreparedPacket",
    "ReadBody",
    "RefuseWebSocket",
    "ServerConfig",
    "Session",
    "Upgraded",
    "WebSocketChannel",
]

# A waker's return value is ignored (``ParkingLot.unpark_all`` and ``Event.set`` both fit).
Waker = Callable[[], object]
#: What a session can send: a message, or a message encoded once for many sessions.
Message = Union[str, bytes, PreparedPacket]


class ErrorCode(enum.IntEnum):
    """Node's ``Server.errors``; the message is ``ERROR_MESSAGES[code]``."""

    UNKNOWN_TRANSPORT = 0
    UNKNOWN_SID = 1
    BAD_HANDSHAKE_METHOD = 2
    BAD_REQUEST = 3
    FORBIDDEN = 4
    UNSUPPORTED_PROTOCOL_VERSION = 5


ERROR_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.UNKNOWN_TRANSPORT: "Transport unknown",
    ErrorCode.UNKNOWN_SID: "Session ID unknown",
    ErrorCode.BAD_HANDSHAKE_METHOD: "Bad handshake method",
    ErrorCode.BAD_REQUEST: "Bad request",
    ErrorCode.FORBIDDEN: "Forbidden",
    ErrorCode.UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}


class DisconnectReason(str, enum.Enum):
    """Why a session ended (the ``reason`` of :class:`Disconnected`).

    Node names: ``transport close`` is also what Node reports for a client ``1``; we keep
    that case apart as ``client close`` so the application can tell a clean goodbye from
    a dropped connection.
    """

    PING_TIMEOUT = "ping timeout"
    TRANSPORT_CLOSE = "transport close"
    TRANSPORT_ERROR = "transport error"
    MESSAGE_TOO_BIG = "message too big"
    PARSE_ERROR = "parse error"
    FORCED_CLOSE = "forced close"
    CLIENT_CLOSE = "client close"
    SLOW_CONSUMER = "slow consumer"


# ---------------------------------------------------------------------------- I/O types


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What the HTTP layer parsed. ``headers`` keys must be lower-case.

    ``websocket_upgrade`` is true when the request is a WebSocket opening handshake
    (the WebSocket layer validates the handshake headers themselves).
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str] = field(default_factory=dict)
    websocket_upgrade: bool = False


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


@dataclass(frozen=True, slots=True)
class PollParked:
    """A long-polling GET must wait: see :meth:`EngineIOServer.poll_ready`."""

    sid: str


@dataclass(frozen=True, slots=True)
class ReadBody:
    """A POST was accepted: read at most ``limit`` bytes of body, then report back."""

    sid: str
    limit: int


@dataclass(frozen=True, slots=True)
class AcceptWebSocket:
    """Answer the handshake with 101 (plus ``headers``)."""

    sid: str | None
    channel: WebSocketChannel | None
    close_immediately: bool = False
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RefuseWebSocket:
    """Write :meth:`raw_response` on the raw socket, then destroy it (Node ``abortUpgrade``)."""

    message: str

    def raw_response(self) -> bytes:
        body = self.message.encode("utf-8")
        return (
            b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-type: text/html\r\n"
            b"X-Content-Type-Options: nosniff\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode("ascii")
            + body
        )


RequestOutcome = Union[HttpResponse, PollParked, ReadBody, AcceptWebSocket, RefuseWebSocket]

# ----------------------------------------------------------------------- application events


@dataclass(frozen=True, slots=True)
class Connected:
    sid: str
    transport: str


@dataclass(slots=True)  # not frozen: made per message, and a frozen dataclass costs 3x to build
class MessageReceived:
    sid: str
    data: str | bytes


@dataclass(frozen=True, slots=True)
class Upgraded:
    sid: str
    transport: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    sid: str
    reason: DisconnectReason
    description: str = ""


Event = Union[Connected, MessageReceived, Upgraded, Disconnected]

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class CorsConfig:
    """CORS for polling responses. ``allowed_origins="*"`` allows any origin.

    With ``credentials`` the request's Origin is echoed (never ``*``) and
    ``Access-Control-Allow-Credentials: true`` is added.
    """

    allowed_origins: tuple[str, ...] | Literal["*"] = ()
    credentials: bool = False
    allowed_methods: tuple[str, ...] = ("GET", "POST", "OPTIONS")
    max_age: int | None = None

    def allows(self, origin: str) -> bool:
        """True if ``origin`` is allowed (compared by :func:`volleyio.origin.normalize_origin`)."""
        return origin_allowed(origin, self.allowed_origins)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Server options. Durations are integer milliseconds: they are advertised as-is."""

    ping_interval_ms: int = 25_000
    ping_timeout_ms: int = 20_000
    upgrade_timeout_ms: int = 10_000
    max_payload: int = 1_000_000
    transports: tuple[str, ...] = ("polling", "websocket")
    allow_upgrades: bool = True
    max_packets_per_poll: int = MAX_PACKETS_PER_PAYLOAD
    max_buffered_bytes: int = 1 << 20
    # Origin check on handshakes: None = same-origin when an Origin header is present,
    # "*" = any, a tuple = those origins (plus any the CORS config allows).
    allowed_origins: tuple[str, ...] | Literal["*"] | None = None
    cors: CorsConfig | None = None
    # Name of the sticky-session cookie set on the handshake (Node's ``cookie`` option).
    cookie: str | None = None
    # Hook on handshakes: return None to allow, or a refusal message (403, code 4).
    allow_request: Callable[[HttpRequest], str | None] | None = None
    sid_bytes: int = 18

    def __post_init__(self) -> None:
        for name in ("ping_interval_ms", "ping_timeout_ms", "upgrade_timeout_ms", "max_payload"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer")
        if self.sid_bytes < 16:
            raise ValueError("session ids need at least 16 random bytes")
        unknown = set(self.transports) - {"polling", "websocket"}
        if unknown or not self.transports:
            raise ValueError(f"unsupported transports: {sorted(unknown)}")


# ------------------------------------------------------------------------------ the session


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # closed for the application; a last packet is still to be delivered
    CLOSED = "closed"


class _Upgrade(enum.Enum):
    NONE = "none"
    PROBING = "probing"  # WebSocket accepted, waiting for 2probe
    PROBED = "probed"  # 3probe sent, waiting for 5
    DONE = "done"


class WebSocketChannel:
    """One accepted WebSocket of a session (its main transport, or an upgrade probe)."""

    __slots__ = ("_server", "_session", "_frames", "closing", "lost", "_waker", "__weakref__")

    def __init__(self, server: EngineIOServer, session: Session) -> None:
        self._server = server
        self._session = session
        # Only the probe's "3probe" waits here; the session's packets are taken directly.
        self._frames: list[str | bytes | PreparedPacket] = []
        self.closing = False
        self.lost = False
        self._waker: Waker | None = None

    @property
    def sid(self) -> str:
        return self._session.sid

    def set_waker(self, waker: Waker | None) -> None:
        """``waker()`` is called whenever :meth:`take_outgoing` has something new."""
        self._waker = waker

    def _wake(self) -> None:
        if self._waker is not None:
            self._waker()

    def receive(self, message: str | bytes, now: float) -> None:
        """Feed one complete WebSocket message (text as ``str``, binary as ``bytes``)."""
        if self.lost or self.closing:
            return
        self._server._websocket_message(self, message, now)

    def take_outgoing(self) -> tuple[list[str | bytes | PreparedPacket], bool]:
        """Return ``(messages to send, close after sending them)``.

        A :class:`PreparedPacket` stands for its ``websocket_message``.
        """
        session = self._session
        frames: list[str | bytes | PreparedPacket] = []
        if self._frames:
            frames, self._frames = self._frames, frames
        if session._websocket is self and session.transport == "websocket":
            while session._outgoing:
                packet = session._pop_packet()
                frames.append(packet if isinstance(packet, PreparedPacket) else encode_websocket_frame(packet))
            if session._state is not _State.OPEN:
                self.closing = True
                self._server._finish_closing(session)
        return frames, self.closing

    def connection_lost(self, now: float, reason: DisconnectReason = DisconnectReason.TRANSPORT_CLOSE) -> None:
        """The WebSocket is gone (peer close, error; ``MESSAGE_TOO_BIG`` after a 1009)."""
        if self.lost:
            return
        self.lost = True
        self._server._websocket_lost(self, now, reason)


class Session:
    """One Engine.IO session, as the application sees it."""

    __slots__ = (
        "_server", "sid", "transport", "_state", "_outgoing", "_buffered", "_get_parked", "_post_pending",
        "_poll_waker", "_poll_headers", "_post_headers", "_poll_override", "_websocket", "_upgrade",
        "_upgrade_deadline", "_ping_due", "_pong_deadline", "_pong_deadline_refreshed", "_closing_deadline",
        "created_at",
        "_n_packets_in", "_n_packets_out", "_n_messages_in", "_n_messages_out", "_n_bytes_in", "_n_bytes_out",
        "__weakref__",
    )

    def __init__(self, server: EngineIOServer, sid: str, transport: str, now: float) -> None:
        self._server = server
        self.sid = sid
        self.transport = transport
        self._state = _State.OPEN
        # None while empty: an idle session holds no deque (see _push/_pop_packet).
        self._outgoing: deque[Packet | PreparedPacket] | None = None
        self._buffered = 0
        self._get_parked = False
        self._post_pending = False
        self._poll_waker: Waker | None = None
        # CORS headers of the parked GET / pending POST: their answers come later, from
        # poll_ready / post_body, and need them too.
        self._poll_headers: tuple[tuple[str, str], ...] = ()
        self._post_headers: tuple[tuple[str, str], ...] = ()
        # The parked GET must be answered with this packet instead of the buffer
        # (``1`` after an error close, ``6`` after a client close or during an upgrade).
        self._poll_override: PacketType | None = None
        self._websocket: WebSocketChannel | None = None
        self._upgrade = _Upgrade.NONE
        self._upgrade_deadline: float | None = None
        config = server.config
        self._ping_due: float | None = now + config.ping_interval_ms / 1000
        self._pong_deadline: float | None = None
        # The pong deadline was extended once by another packet (Node's hasRefreshedPingTimeout).
        self._pong_deadline_refreshed = False
        self._closing_deadline: float | None = None
        self.created_at = now
        self._n_packets_in = 0
        self._n_packets_out = 0
        self._n_messages_in = 0
        self._n_messages_out = 0
        self._n_bytes_in = 0
        self._n_bytes_out = 0  # message payload lengths (characters for text, as the buffer counts)

    # -- application API

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    @property
    def upgrading(self) -> bool:
        return self._upgrade in (_Upgrade.PROBING, _Upgrade.PROBED)

    @property
    def writable(self) -> bool:
        """Whether a packet sent now would go out at once (Node's ``transport.writable``)."""
        if self._state is not _State.OPEN or self._outgoing:
            return False
        if self.transport == "polling":
            return self._get_parked and self._upgrade is not _Upgrade.PROBED
        return self._websocket is not None and not self._websocket.lost

    @property
    def buffered_amount(self) -> int:
        return self._buffered

    def send(self, data: Message, *, volatile: bool = False) -> bool:
        """Queue one message. Returns ``False`` if it was dropped (see module docs).

        ``data`` may be a :class:`PreparedPacket` shared with other sessions (broadcast).
        """
        if self._state is not _State.OPEN:
            return False
        if volatile and not self.writable:
            return False
        size = len(data)
        if self._buffered + size > self._server.config.max_buffered_bytes:
            self._server._close(self, DisconnectReason.SLOW_CONSUMER, "outgoing buffer full", None)
            return False
        self._n_messages_out += 1
        self._n_bytes_out += size
        if isinstance(data, PreparedPacket):
            self._push(data)
        else:
            self._push(Packet(PacketType.MESSAGE, bytes(data) if not isinstance(data, str) else data))
        return True

    def send_direct(self, data: Message) -> bool:
        """For an I/O layer that writes WebSocket frames itself: record ``data`` as sent
        when it would be the very next packet on the wire -- the session is open, on its
        WebSocket, not upgrading, with nothing buffered -- and return True; the caller
        then writes it at once, before anything sent later. Otherwise nothing is recorded
        (False): use :meth:`send`. Saves the buffer round trip for broadcasts and for
        replies to a peer that is not sending more."""
        if (
            self._state is not _State.OPEN
            or self._outgoing
            or self.transport != "websocket"
            or self._upgrade is _Upgrade.PROBING
            or self._upgrade is _Upgrade.PROBED
        ):
            return False
        channel = self._websocket
        if channel is None or channel.lost or channel.closing or channel._frames:
            return False
        size = len(data)
        if size > self._server.config.max_buffered_bytes:
            return False  # send() applies the slow-consumer rule
        self._n_messages_out += 1
        self._n_packets_out += 1
        self._n_bytes_out += size
        return True

    def close(self, now: float) -> None:
        """Close the session from the server side ("forced close"): buffered packets are
        still delivered, then ``1`` (polling) or a close frame (WebSocket)."""
        if self._state is _State.OPEN:
            self._server._close(self, DisconnectReason.FORCED_CLOSE, "", now)

    def statistics(self) -> dict[str, int | str | bool]:
        return {
            "sid": self.sid,
            "transport": self.transport,
            "open": self.is_open,
            "upgrading": self.upgrading,
            "buffered_packets": len(self._outgoing) if self._outgoing else 0,
            "buffered_bytes": self._buffered,
            "packets_in": self._n_packets_in,
            "packets_out": self._n_packets_out,
            "messages_in": self._n_messages_in,
            "messages_out": self._n_messages_out,
            "bytes_in": self._n_bytes_in,
            "bytes_out": self._n_bytes_out,
        }

    # -- internals

    def _push(self, packet: Packet | PreparedPacket) -> None:
        outgoing = self._outgoing
        if outgoing is None:
            outgoing = self._outgoing = deque()
        outgoing.append(packet)
        self._buffered += len(packet.data)
        self._wake()

    def _pop_packet(self) -> Packet | PreparedPacket:
        outgoing = self._outgoing
        assert outgoing is not None
        packet = outgoing.popleft()
        if not outgoing:
            self._outgoing = None
        self._buffered -= len(packet.data)
        self._n_packets_out += 1
        return packet

    def _wake(self) -> None:
        if self.transport == "polling" or self._upgrade in (_Upgrade.PROBING, _Upgrade.PROBED):
            if self._poll_waker is not None:
                self._poll_waker()
        if self._websocket is not None and self.transport == "websocket":
            self._websocket._wake()

    def _deadline(self) -> float | None:
        candidates = [
            d
            for d in (self._ping_due, self._pong_deadline, self._upgrade_deadline, self._closing_deadline)
            if d is not None
        ]
        return min(candidates) if candidates else None


# ------------------------------------------------------------------------------- the server

#: On every error response: browsers must not guess a type for its body.
_NOSNIFF = ("X-Content-Type-Options", "nosniff")
_INVALID_HEADER_CHAR = re.compile(r"[^\t\x20-\x7e\x80-\xff]")


class EngineIOServer:
    """The session manager. One instance per Engine.IO endpoint."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self._sessions: dict[str, Session] = {}
        # Sessions whose GET is parked, including closed ones whose GET still awaits
        # its final ``1``/``6``.
        self._parked: dict[str, Session] = {}
        self._events: list[Event] = []
        self._event_waker: Waker | None = None
        self._timer_waker: Waker | None = None
        self._timer_heap: list[tuple[float, int, Session]] = []
        self._counter = itertools.count()
        self._totals = {"sessions_opened": 0, "sessions_closed": 0, "upgrades": 0, "upgrades_failed": 0}
        # Traffic of closed sessions, and of sessions before their upgrade, per transport:
        # [messages in, messages out, bytes in, bytes out] (see ``traffic``).
        self._retired: dict[str, list[int]] = {"polling": [0, 0, 0, 0], "websocket": [0, 0, 0, 0]}
        self._closes: dict[str, int] = {}  # sessions closed, by reason

    # ------------------------------------------------------------------ public API

    def session(self, sid: str) -> Session | None:
        session = self._sessions.get(sid)
        return session if session is not None and session.is_open else None

    def sessions(self) -> list[Session]:
        return [s for s in self._sessions.values() if s.is_open]

    def send(self, sid: str, data: Message, *, volatile: bool = False) -> bool:
        session = self.session(sid)
        return session.send(data, volatile=volatile) if session is not None else False

    def close(self, sid: str, now: float) -> None:
        session = self.session(sid)
        if session is not None:
            session.close(now)

    def close_all(self, now: float) -> None:
        """Server shutdown: every open session gets a forced close."""
        for session in self.sessions():
            session.close(now)

    def take_events(self) -> list[Event]:
        events = self._events
        if not events:
            return []
        self._events = []
        return events

    @property
    def has_events(self) -> bool:
        """Whether :meth:`take_events` would return something (a cheap check)."""
        return bool(self._events)

    def set_event_waker(self, waker: Waker | None) -> None:
        self._event_waker = waker

    def set_timer_waker(self, waker: Waker | None) -> None:
        """``waker()`` is called when a deadline earlier than any before may have been armed."""
        self._timer_waker = waker

    def set_poll_waker(self, sid: str, waker: Waker | None) -> None:
        session = self._parked.get(sid) or self._sessions.get(sid)
        if session is not None:
            session._poll_waker = waker

    def statistics(self) -> dict[str, int]:
        open_sessions = self.sessions()
        return {
            "sessions": len(open_sessions),
            "polling": sum(1 for s in open_sessions if s.transport == "polling"),
            "websocket": sum(1 for s in open_sessions if s.transport == "websocket"),
            "parked_polls": len(self._parked),
            **self._totals,
        }

    def traffic(self) -> dict[str, dict[str, int]]:
        """Messages and bytes in/out since start, per transport (a session's traffic
        counts for the transport it used at the time): ``{"polling": {"messages_in":
        ..., "messages_out": ..., "bytes_in": ..., "bytes_out": ...}, "websocket": ...}``.
        Monotonic counters, summed on demand (costs one pass over the open sessions)."""
        totals = {transport: list(values) for transport, values in self._retired.items()}
        for session in self._sessions.values():
            if session._state is _State.OPEN:
                values = totals.setdefault(session.transport, [0, 0, 0, 0])
                values[0] += session._n_messages_in
                values[1] += session._n_messages_out
                values[2] += session._n_bytes_in
                values[3] += session._n_bytes_out
        names = ("messages_in", "messages_out", "bytes_in", "bytes_out")
        return {transport: dict(zip(names, values)) for transport, values in totals.items()}

    def closes(self) -> dict[str, int]:
        """Sessions closed since start, by reason (``DisconnectReason`` values)."""
        return dict(self._closes)

    def _retire(self, session: Session, moving_to: str | None = None) -> None:
        """Fold the session's traffic counters into its transport's totals: when it
        closes, or (``moving_to``) when it changes transport -- then the same amounts are
        taken off the new transport's totals, which will count the session's whole
        counters later (the session's own statistics are never reset)."""
        counts = (session._n_messages_in, session._n_messages_out, session._n_bytes_in, session._n_bytes_out)
        values = self._retired.setdefault(session.transport, [0, 0, 0, 0])
        for index, count in enumerate(counts):
            values[index] += count
        if moving_to is not None:
            values = self._retired.setdefault(moving_to, [0, 0, 0, 0])
            for index, count in enumerate(counts):
                values[index] -= count

    @property
    def max_body_size(self) -> int:
        return self.config.max_payload

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        heap = self._timer_heap
        while heap:
            deadline, _, session = heap[0]
            if session._state is not _State.CLOSED and session._deadline() == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timers(self, now: float) -> None:
        heap = self._timer_heap
        while heap and heap[0][0] <= now:
            deadline, _, session = heapq.heappop(heap)
            if session._state is _State.CLOSED or session._deadline() != deadline:
                continue
            self._run_session_timers(session, now)

    def _schedule(self, session: Session) -> None:
        deadline = session._deadline()
        if deadline is None or session._state is _State.CLOSED:
            return
        earliest = self.next_deadline()
        heapq.heappush(self._timer_heap, (deadline, next(self._counter), session))
        if (earliest is None or deadline < earliest) and self._timer_waker is not None:
            self._timer_waker()

    def _run_session_timers(self, session: Session, now: float) -> None:
        if session._closing_deadline is not None and session._closing_deadline <= now:
            session._closing_deadline = None
            self._finalize(session)
            return
        if session._pong_deadline is not None and session._pong_deadline <= now:
            self._close(session, DisconnectReason.PING_TIMEOUT, "", now)
            return
        if session._upgrade_deadline is not None and session._upgrade_deadline <= now:
            self._abort_upgrade(session)
        if session._ping_due is not None and session._ping_due <= now and session._state is _State.OPEN:
            session._ping_due = None
            session._pong_deadline = now + self.config.ping_timeout_ms / 1000
            session._pong_deadline_refreshed = False
            session._push(Packet(PacketType.PING))
        self._schedule(session)

    # ------------------------------------------------------------------ requests

    def handle_request(self, request: HttpRequest, now: float) -> RequestOutcome:
        """Decide what to do with a request (the body of a POST is read later)."""
        cors_headers = self._cors_headers(request)
        if request.method == "OPTIONS" and self.config.cors is not None and not request.websocket_upgrade:
            return self._preflight(request, cors_headers)
        query = request.query
        transport = query.get("transport")
        if transport not in self.config.transports:
            return self._error(request, ErrorCode.UNKNOWN_TRANSPORT, cors_headers)
        origin = request.headers.get("origin")
        if origin is not None and _INVALID_HEADER_CHAR.search(origin):
            return self._error(request, ErrorCode.BAD_REQUEST, cors_headers)
        sid = query.get("sid")
        if sid:
            session = self._sessions.get(sid)
            if session is None:
                return self._error(request, ErrorCode.UNKNOWN_SID, cors_headers)
            if not request.websocket_upgrade and session.transport != transport:
                return self._error(request, ErrorCode.BAD_REQUEST, cors_headers)
            if request.websocket_upgrade:
                return self._upgrade_request(session, transport, now)
            return self._polling_request(session, request, cors_headers, now)
        if request.method != "GET":
            return self._error(request, ErrorCode.BAD_HANDSHAKE_METHOD, cors_headers)
        if transport == "websocket" and not request.websocket_upgrade:
            return self._error(request, ErrorCode.BAD_REQUEST, cors_headers)
        refusal = self._check_origin(request)
        if refusal is None and self.config.allow_request is not None:
            refusal = self.config.allow_request(request)
        if refusal is not None:
            return self._error(request, ErrorCode.FORBIDDEN, cors_headers, refusal)
        if request.websocket_upgrade and transport == "polling":
            # Node (onWebSocket): a transport that does not handle upgrades gets the
            # WebSocket accepted and closed, before the protocol version is looked at.
            return AcceptWebSocket(sid=None, channel=None, close_immediately=True)
        if query.get("EIO") != "4":
            return self._error(request, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION, cors_headers)
        return self._handshake(transport, request, cors_headers, now)

    def poll_ready(self, sid: str, now: float) -> HttpResponse | None:
        """For a parked GET: the response if one is ready now, else ``None``."""
        session = self._parked.get(sid)
        if session is None:
            return None
        body = self._poll_body(session)
        if body is None:
            return None
        del self._parked[sid]
        session._get_parked = False
        session._poll_waker = None
        return self._poll_response(session, body, session._poll_headers)

    def poll_cancelled(self, sid: str, now: float) -> None:
        """The client closed the connection of a parked GET."""
        session = self._parked.pop(sid, None)
        if session is None:
            return
        session._get_parked = False
        session._poll_waker = None
        if session._state is _State.OPEN:
            self._close(session, DisconnectReason.TRANSPORT_ERROR, "poll connection closed prematurely", now)
        else:
            self._finish_closing(session)

    def post_body(self, sid: str, body: bytes, now: float) -> HttpResponse:
        """The whole body of an accepted POST has been read."""
        session = self._sessions.get(sid)
        if session is None or not session._post_pending:
            return self._plain_error(400)
        session._post_pending = False
        cors_headers = session._post_headers
        if session._state is not _State.OPEN:
            return self._ok_response(cors_headers)
        if len(body) > self.config.max_payload:
            return self.post_too_large(sid, now)
        try:
            packets = decode_payload(body)
        except EngineIOParseError as exc:
            self._close(session, DisconnectReason.PARSE_ERROR, str(exc), now)
            return self._error_response(ErrorCode.BAD_REQUEST, cors_headers)
        session._n_bytes_in += len(body)
        for packet in packets:
            if not self._incoming_packet(session, packet, now):
                break
        return self._ok_response(cors_headers)

    def post_too_large(self, sid: str, now: float) -> HttpResponse:
        """The POST body exceeded :attr:`max_body_size`: answer 413 and close the session.

        Node answers 413 but keeps the session; we close it because the dropped packets
        would otherwise silently break ordering (and Socket.IO attachment reassembly).
        """
        session = self._sessions.get(sid)
        cors_headers: tuple[tuple[str, str], ...] = ()
        if session is not None:
            cors_headers = session._post_headers
            session._post_pending = False
            if session._state is _State.OPEN:
                self._close(session, DisconnectReason.MESSAGE_TOO_BIG, "POST body over maxPayload", now)
        return HttpResponse(413, (("Content-Length", "0"), _NOSNIFF) + cors_headers, b"")

    def post_aborted(self, sid: str, now: float) -> None:
        session = self._sessions.get(sid)
        if session is not None and session._post_pending:
            session._post_pending = False
            if session._state is _State.OPEN:
                self._close(
                    session, DisconnectReason.TRANSPORT_ERROR, "data request connection closed prematurely", now
                )

    # ------------------------------------------------------------------ request internals

    def _handshake(
        self, transport: str, request: HttpRequest, cors_headers: tuple[tuple[str, str], ...], now: float
    ) -> RequestOutcome:
        sid = secrets.token_urlsafe(self.config.sid_bytes)
        while sid in self._sessions:  # pragma: no cover - 144 random bits never collide
            sid = secrets.token_urlsafe(self.config.sid_bytes)
        session = Session(self, sid, transport, now)
        self._sessions[sid] = session
        self._totals["sessions_opened"] += 1
        upgrades = ["websocket"] if (
            transport == "polling" and self.config.allow_upgrades and "websocket" in self.config.transports
        ) else []
        open_data = json.dumps(
            {
                "sid": sid,
                "upgrades": upgrades,
                "pingInterval": self.config.ping_interval_ms,
                "pingTimeout": self.config.ping_timeout_ms,
                "maxPayload": self.config.max_payload,
            },
            separators=(",", ":"),
        )
        session._push(Packet(PacketType.OPEN, open_data))
        self._emit(Connected(sid, transport))
        self._schedule(session)
        extra: tuple[tuple[str, str], ...] = ()
        if self.config.cookie:
            extra = (("Set-Cookie", f"{self.config.cookie}={sid}; Path=/; HttpOnly; SameSite=Lax"),)
        if transport == "websocket":
            channel = WebSocketChannel(self, session)
            session._websocket = channel
            return AcceptWebSocket(sid=sid, channel=channel, headers=extra)
        body = self._poll_body(session)
        assert body is not None  # the open packet is buffered
        return self._poll_response(session, body, cors_headers + extra)

    def _polling_request(
        self, session: Session, request: HttpRequest, cors_headers: tuple[tuple[str, str], ...], now: float
    ) -> RequestOutcome:
        if request.method == "GET":
            if session._get_parked:
                # Node: onError("overlap from client"); the pending GET is answered ``1``.
                self._close(session, DisconnectReason.TRANSPORT_ERROR, "overlap from client", now)
                return self._plain_error(400, cors_headers)
            body = self._poll_body(session)
            if body is not None:
                return self._poll_response(session, body, cors_headers)
            session._get_parked = True
            session._poll_headers = cors_headers
            self._parked[session.sid] = session
            return PollParked(session.sid)
        if request.method == "POST":
            if session._post_pending:
                self._close(session, DisconnectReason.TRANSPORT_ERROR, "data request overlap from client", now)
                return self._plain_error(400, cors_headers)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type == "application/octet-stream":
                self._close(session, DisconnectReason.TRANSPORT_ERROR, "invalid content", now)
                return self._plain_error(400, cors_headers)
            session._post_pending = True
            session._post_headers = cors_headers
            return ReadBody(session.sid, self.config.max_payload)
        return self._error(request, ErrorCode.BAD_REQUEST, cors_headers)

    def _poll_body(self, session: Session) -> bytes | None:
        """What a GET for this session returns now, or ``None`` if it has to wait."""
        if session.transport != "polling":
            # Upgraded: the discarded polling transport's last GET only gets a noop; the
            # buffer belongs to the WebSocket now.
            session._poll_override = None
            return b"6"
        if session._poll_override is not None:
            packet_type = session._poll_override
            session._poll_override = None
            self._finish_closing(session)
            return str(int(packet_type)).encode("ascii")
        if session._outgoing:
            count = min(len(session._outgoing), self.config.max_packets_per_poll)
            packets: list[Packet | PreparedPacket] = [session._pop_packet() for _ in range(count)]
            if session._state is _State.CLOSING and not session._outgoing:
                packets.append(Packet(PacketType.CLOSE))
                self._finish_closing(session)
            payload, _ = encode_payload(packets, max_packets=None)
            return payload.encode("utf-8")
        if session._state is _State.CLOSING:
            self._finish_closing(session)
            return b"1"
        if session._upgrade is _Upgrade.PROBED:
            # Lets the client pause polling and complete the upgrade (Node sends noop).
            return b"6"
        return None

    def _poll_response(
        self, session: Session, body: bytes, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse:
        headers = (
            ("Content-Type", "text/plain; charset=UTF-8"),
            ("Content-Length", str(len(body))),
        ) + extra_headers
        return HttpResponse(200, headers, body)

    def _ok_response(self, extra: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
        return HttpResponse(200, (("Content-Type", "text/html"), ("Content-Length", "2")) + extra, b"ok")

    def _plain_error(self, status: int, extra: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
        return HttpResponse(status, (("Content-Length", "0"), _NOSNIFF) + extra, b"")

    def _error_response(
        self, code: ErrorCode, extra: tuple[tuple[str, str], ...], message: str | None = None
    ) -> HttpResponse:
        body = json.dumps({"code": int(code), "message": message or ERROR_MESSAGES[code]}, separators=(",", ":"))
        encoded = body.encode("utf-8")
        status = 403 if code is ErrorCode.FORBIDDEN else 400
        return HttpResponse(
            status,
            (("Content-Type", "application/json"), ("Content-Length", str(len(encoded))), _NOSNIFF) + extra,
            encoded,
        )

    def _error(
        self,
        request: HttpRequest,
        code: ErrorCode,
        cors_headers: tuple[tuple[str, str], ...],
        message: str | None = None,
    ) -> HttpResponse | RefuseWebSocket:
        if request.websocket_upgrade:
            return RefuseWebSocket(message or ERROR_MESSAGES[code])
        return self._error_response(code, cors_headers, message)

    def _check_origin(self, request: HttpRequest) -> str | None:
        origin = request.headers.get("origin")
        if origin is None:
            return None
        allowed = self.config.allowed_origins
        if allowed == "*":
            return None
        if self.config.cors is not None and self.config.cors.allows(origin):
            return None
        if allowed is None:
            return None if same_origin(origin, request.headers.get("host")) else "Forbidden"
        return None if origin_allowed(origin, allowed) else "Forbidden"

    def _cors_headers(self, request: HttpRequest) -> tuple[tuple[str, str], ...]:
        cors = self.config.cors
        origin = request.headers.get("origin")
        if cors is None or origin is None or not cors.allows(origin):
            return ()
        headers: list[tuple[str, str]] = []
        if cors.allowed_origins == "*" and not cors.credentials:
            headers.append(("Access-Control-Allow-Origin", "*"))
        else:
            headers.append(("Access-Control-Allow-Origin", origin))
            headers.append(("Vary", "Origin"))
        if cors.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return tuple(headers)

    def _preflight(self, request: HttpRequest, cors_headers: tuple[tuple[str, str], ...]) -> HttpResponse:
        assert self.config.cors is not None
        headers = list(cors_headers)
        if cors_headers:
            headers.append(("Access-Control-Allow-Methods", ",".join(self.config.cors.allowed_methods)))
            requested = request.headers.get("access-control-request-headers")
            if requested:
                headers.append(("Access-Control-Allow-Headers", requested))
            if self.config.cors.max_age is not None:
                headers.append(("Access-Control-Max-Age", str(self.config.cors.max_age)))
        headers.append(("Content-Length", "0"))
        return HttpResponse(204, tuple(headers), b"")

    # ------------------------------------------------------------------ upgrade

    def _upgrade_request(self, session: Session, transport: str, now: float) -> AcceptWebSocket:
        if (
            transport != "websocket"
            or session._state is not _State.OPEN
            or session.transport != "polling"
            or session._upgrade is not _Upgrade.NONE
            or not self.config.allow_upgrades
        ):
            return AcceptWebSocket(sid=session.sid, channel=None, close_immediately=True)
        channel = WebSocketChannel(self, session)
        session._websocket = channel
        session._upgrade = _Upgrade.PROBING
        session._upgrade_deadline = now + self.config.upgrade_timeout_ms / 1000
        self._schedule(session)
        return AcceptWebSocket(sid=session.sid, channel=channel)

    def _abort_upgrade(self, session: Session) -> None:
        self._totals["upgrades_failed"] += 1
        channel = session._websocket
        session._upgrade = _Upgrade.NONE
        session._upgrade_deadline = None
        session._websocket = None
        if channel is not None and not channel.lost:
            channel.closing = True
            channel._wake()

    def _complete_upgrade(self, session: Session, channel: WebSocketChannel) -> None:
        session._upgrade = _Upgrade.DONE
        session._upgrade_deadline = None
        self._retire(session, "websocket")
        session.transport = "websocket"
        self._totals["upgrades"] += 1
        if session._get_parked:
            # The discarded polling transport's pending GET is released with a noop.
            session._poll_override = PacketType.NOOP
            if session._poll_waker is not None:
                session._poll_waker()
        self._emit(Upgraded(session.sid, "websocket"))
        channel._wake()

    # ------------------------------------------------------------------ packets in

    def _websocket_message(self, channel: WebSocketChannel, message: str | bytes, now: float) -> None:
        session = channel._session
        if session._websocket is not channel:
            return
        if (
            message.__class__ is str
            and message[:1] == "4"
            and session._state is _State.OPEN
            and session._upgrade is not _Upgrade.PROBING
            and session._upgrade is not _Upgrade.PROBED
        ):
            # A text message on an established WebSocket (the everyday frame): no packet object.
            session._n_bytes_in += len(message)
            self._message_in(session, message[1:], now)
            return
        try:
            packet = decode_websocket_frame(message)
        except EngineIOParseError as exc:
            if session._upgrade in (_Upgrade.PROBING, _Upgrade.PROBED):
                self._abort_upgrade(session)
            else:
                self._close(session, DisconnectReason.PARSE_ERROR, str(exc), now)
            return
        session._n_bytes_in += len(message)
        if session._upgrade in (_Upgrade.PROBING, _Upgrade.PROBED):
            if packet.type is PacketType.PING and packet.data == "probe":
                channel._frames.append("3probe")
                session._upgrade = _Upgrade.PROBED
                channel._wake()
                if session._get_parked and session._poll_waker is not None:
                    session._poll_waker()
            elif packet.type is PacketType.UPGRADE:
                self._complete_upgrade(session, channel)
            else:
                self._abort_upgrade(session)
            return
        self._incoming_packet(session, packet, now)

    def _websocket_lost(self, channel: WebSocketChannel, now: float, reason: DisconnectReason) -> None:
        session = channel._session
        if session._websocket is not channel:
            return
        if session._upgrade in (_Upgrade.PROBING, _Upgrade.PROBED):
            # A failed probe does not hurt the polling session.
            self._totals["upgrades_failed"] += 1
            session._websocket = None
            session._upgrade = _Upgrade.NONE
            session._upgrade_deadline = None
            return
        if session._state is _State.OPEN:
            self._close(session, reason, "", now)
        self._finalize(session)

    def _incoming_packet(self, session: Session, packet: Packet, now: float) -> bool:
        """Handle one packet from the client; ``False`` once the session is closed."""
        if session._state is not _State.OPEN:
            return False
        if packet.type is PacketType.MESSAGE:
            self._message_in(session, packet.data, now)
            return True
        session._n_packets_in += 1
        if packet.type is PacketType.PONG:
            session._pong_deadline = None
            session._ping_due = now + self.config.ping_interval_ms / 1000
            self._schedule(session)
            return True
        self._data_before_pong(session, now)
        if packet.type is PacketType.CLOSE:
            self._close(session, DisconnectReason.CLIENT_CLOSE, "", now)
            return False
        elif packet.type is PacketType.PING:
            self._close(session, DisconnectReason.TRANSPORT_ERROR, "invalid heartbeat direction", now)
            return False
        # open / upgrade / noop from a client on an established session: ignored, as Node does.
        return True

    def _message_in(self, session: Session, data: str | bytes, now: float) -> None:
        """A message from the client on an open session."""
        session._n_packets_in += 1
        self._data_before_pong(session, now)
        session._n_messages_in += 1
        self._emit(MessageReceived(session.sid, data))

    def _data_before_pong(self, session: Session, now: float) -> None:
        if session._pong_deadline is not None and not session._pong_deadline_refreshed:
            # Node: a client whose pong sits behind its own data (a big upload, a busy
            # POST queue) is not dropped while data arrives -- once per ping.
            session._pong_deadline_refreshed = True
            session._pong_deadline = now + self.config.ping_timeout_ms / 1000
            self._schedule(session)

    # ------------------------------------------------------------------ closing

    def _close(self, session: Session, reason: DisconnectReason, description: str, now: float | None) -> None:
        """Close a session for the application; the transport still gets its last word."""
        if session._state is not _State.OPEN:
            return
        session._state = _State.CLOSING
        session._ping_due = None
        session._pong_deadline = None
        self._totals["sessions_closed"] += 1
        self._closes[reason.value] = self._closes.get(reason.value, 0) + 1
        self._retire(session)
        self._emit(Disconnected(session.sid, reason, description))
        if session._upgrade in (_Upgrade.PROBING, _Upgrade.PROBED):
            self._abort_upgrade(session)
        graceful = reason is DisconnectReason.FORCED_CLOSE
        if not graceful:
            # Nothing more will be delivered except the close signal itself.
            session._outgoing = None
            session._buffered = 0
        if session.transport == "websocket":
            channel = session._websocket
            if channel is None or channel.lost:
                self._finalize(session)
            else:
                channel._wake()
            return
        # polling
        if session._get_parked:
            session._poll_override = PacketType.NOOP if reason is DisconnectReason.CLIENT_CLOSE else (
                None if graceful else PacketType.CLOSE
            )
            if session._poll_waker is not None:
                session._poll_waker()
            if not graceful:
                self._sessions.pop(session.sid, None)
            return
        if graceful and now is not None:
            # Keep the session until the next GET collects the buffer and ``1``.
            session._closing_deadline = now + self.config.ping_timeout_ms / 1000
            self._schedule(session)
            return
        self._finalize(session)

    def _finish_closing(self, session: Session) -> None:
        """The final packet of a closing session went out: forget the session."""
        if session._state is _State.CLOSING:
            self._finalize(session)

    def _finalize(self, session: Session) -> None:
        session._state = _State.CLOSED
        session._closing_deadline = None
        session._upgrade_deadline = None
        if self._sessions.get(session.sid) is session:
            del self._sessions[session.sid]

    def _emit(self, event: Event) -> None:
        self._events.append(event)
        if self._event_waker is not None:
            self._event_waker()
