"""The application's side of an Engine.IO session: :class:`EngineIOSession` (send,
receive, close, whatever the transport) and the handshake record :class:`EngineIORequest`.

The driver (:mod:`volleyio.trio._engineio_server`) feeds sessions and flushes what they
send; this module holds no I/O of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import parse_qsl

import trio

from ..engineio.packets import PreparedPacket
from ..engineio.server import Session
from ._errors import EngineIOClosed
from ._http import Request
from ._waiting import ReceiverWait

if TYPE_CHECKING:
    from ._engineio_server import EngineIOApp
    from ._engineio_websocket import _WebSocketLink

__all__ = ["EngineIORequest", "EngineIOSession", "Message"]

Message = Union[str, bytes, PreparedPacket]
#: receive() yields to the scheduler every this many messages taken without waiting.
_YIELD_EVERY = 16
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled


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
        line = self._raw.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")  # h11 takes bare LF too
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
