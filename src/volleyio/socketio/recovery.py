"""Connection state recovery (Socket.IO 4.6 semantics), sans-I/O and in memory.

With recovery on, the server core gives every socket a private session id (``pid``,
sent in the CONNECT answer next to ``sid``) and appends an *offset* to every event it
emits without an ack and not volatile (the last element of the packet's data, as Node
does; the official client remembers the last one it received). When a socket ends
abnormally (:data:`RECOVERABLE_REASONS`: transport close/error, ping timeout, ...), its
id, rooms and ``data`` are kept for ``max_disconnection_ms``. A client that comes back
with ``{"pid": ..., "offset": ...}`` in its CONNECT auth gets them back, and every packet
it missed after ``offset`` is replayed, in order, before anything new.

:class:`RecoveryStore` keeps, in one process, the recent packets (at most
``max_packets``, oldest dropped first; packets older than ``max_disconnection_ms`` are
dropped too) and the disconnected sessions (at most ``max_sessions``, oldest dropped
first). It replays everything or nothing: the packets kept always form one unbroken run
ending at the newest, so an offset still in the store means nothing after it was
dropped; an offset no longer there (or never issued here) refuses the recovery
(``"offset unavailable"``): the client gets a fresh connection, never a gap.

It never reads a clock: callers pass ``now`` (seconds, any monotonic origin).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .adapter import BroadcastOptions

__all__ = [
    "RECOVERABLE_REASONS",
    "RecoveryConfig",
    "RecoveryStore",
    "RestoredSession",
    "SavedSession",
    "should_include",
]

#: Disconnect reasons after which a session is kept (Node's list). An explicit
#: disconnect by either side ("client namespace disconnect", "server namespace
#: disconnect") or a protocol violation ("parse error", "invalid state") is final.
RECOVERABLE_REASONS = frozenset(
    {
        "transport error",
        "transport close",
        "forced close",
        "ping timeout",
        "server shutting down",
        "forced server close",
    }
)


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    """``max_disconnection_ms``: how long a session is kept (Node's
    ``maxDisconnectionDuration``, default 2 minutes). ``skip_middlewares``: a recovered
    socket skips the middlewares (the ``connect`` handler still runs), as Node's default.
    ``max_packets`` / ``max_sessions``: the in-memory bounds (:class:`RecoveryStore`)."""

    max_disconnection_ms: int = 120_000
    skip_middlewares: bool = True
    max_packets: int = 10_000
    max_sessions: int = 10_000

    def __post_init__(self) -> None:
        if self.max_disconnection_ms <= 0 or self.max_packets <= 0 or self.max_sessions <= 0:
            raise ValueError("recovery bounds must be positive")


@dataclass(slots=True)
class SavedSession:
    """What is kept of a socket that ended abnormally."""

    sid: str
    pid: str
    namespace: str
    rooms: tuple[str, ...]
    data: Any
    disconnected_at: float


@dataclass(slots=True)
class RestoredSession:
    """A session given back: ``missed`` holds the encoded messages of every packet the
    client missed, oldest first (each entry one packet: a message list)."""

    sid: str
    pid: str
    rooms: tuple[str, ...]
    data: Any
    missed: list[Sequence[Any]]


def should_include(session_rooms: Sequence[str], sid: str, options: BroadcastOptions) -> bool:
    """Would a socket in ``session_rooms`` have received a packet sent with ``options``?"""
    if options.rooms and not any(room in options.rooms for room in session_rooms):
        return False
    if sid in options.except_sids:
        return False
    return not any(room in options.except_rooms for room in session_rooms)


class RecoveryStore:
    """The in-memory packets and sessions (see the module documentation)."""

    def __init__(self, config: RecoveryConfig) -> None:
        self.config = config
        # offset "<prefix>-<n>": n counts up; the prefix tells this store's offsets apart
        # from another process's (or an earlier run's).
        self._prefix = secrets.token_hex(4)
        self._next = 0
        self._first = 0  # counter of self._packets[0]
        self._packets: deque[tuple[float, BroadcastOptions, Sequence[Any]]] = deque()
        self._sessions: OrderedDict[str, SavedSession] = OrderedDict()

    # ------------------------------------------------------------------ packets

    def next_offset(self) -> str:
        """The offset the next recorded packet will have (put it in the packet first)."""
        return f"{self._prefix}-{self._next}"

    def record(self, options: BroadcastOptions, messages: Sequence[Any], now: float) -> None:
        """Keep the packet whose offset :meth:`next_offset` gave, for replay."""
        packets = self._packets
        packets.append((now, options, messages))
        self._next += 1
        excess = len(packets) - self.config.max_packets
        if excess > 0:
            for _ in range(excess):
                packets.popleft()
            self._first += excess
        self._expire_packets(now)

    def _expire_packets(self, now: float) -> None:
        threshold = now - self.config.max_disconnection_ms / 1000
        packets = self._packets
        while packets and packets[0][0] < threshold:
            packets.popleft()
            self._first += 1

    @property
    def packet_count(self) -> int:
        return len(self._packets)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    # ------------------------------------------------------------------ sessions

    def persist(self, session: SavedSession) -> None:
        sessions = self._sessions
        sessions[session.pid] = session
        sessions.move_to_end(session.pid)
        while len(sessions) > self.config.max_sessions:
            sessions.popitem(last=False)
        self._expire_sessions(session.disconnected_at)

    def _expire_sessions(self, now: float) -> None:
        threshold = now - self.config.max_disconnection_ms / 1000
        sessions = self._sessions
        while sessions:
            pid, oldest = next(iter(sessions.items()))
            if oldest.disconnected_at >= threshold:
                break
            del sessions[pid]

    def restore(self, pid: str, offset: str, namespace: str, now: float) -> RestoredSession | str:
        """The session (taken out of the store: it can be restored once) or why not:
        ``"unknown session"``, ``"session expired"``, ``"offset unavailable"``."""
        session = self._sessions.get(pid)
        if session is None or session.namespace != namespace:
            return "unknown session"
        del self._sessions[pid]
        if now - session.disconnected_at > self.config.max_disconnection_ms / 1000:
            return "session expired"
        self._expire_packets(now)
        index = self._index(offset)
        if index is None:
            return "offset unavailable"
        missed: list[Sequence[Any]] = []
        rooms = session.rooms
        for position in range(index + 1, len(self._packets)):
            _, options, messages = self._packets[position]
            if options.namespace == namespace and should_include(rooms, session.sid, options):
                missed.append(messages)
        return RestoredSession(session.sid, session.pid, rooms, session.data, missed)

    def _index(self, offset: str) -> int | None:
        prefix, _, counter = offset.rpartition("-")
        if prefix != self._prefix or not (counter.isascii() and counter.isdigit()) or len(counter) > 20:
            return None
        index = int(counter) - self._first
        if index < 0 or index >= len(self._packets):
            return None
        return index
