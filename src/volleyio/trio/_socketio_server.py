"""The Socket.IO v5 server on trio: the sans-I/O core (``volleyio.socketio``) driven on
Engine.IO sessions (:class:`EngineIOApp`).

Usage::

    sio = SocketIOServer(cors_origins="*")

    @sio.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        if auth.get("token") != "secret":
            raise ConnectionRefusedError("unauthorized", {"retry": False})
        await socket.join("lobby")

    @sio.on("chat")
    async def chat(socket: Socket, text: str) -> str:
        await sio.emit("chat", socket.id, text, to="lobby", skip=socket.id)
        return "delivered"                  # the ack, when the client asked for one

    @sio.on("disconnect")
    async def disconnect(socket: Socket, reason: str) -> None:
        print(socket.id, "left:", reason)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(sio.serve, "127.0.0.1", 8000)
        # or next to other routes: serve(handler, mounts={"/socket.io/": sio.app})

Handlers
--------
Handlers are ``async def`` functions (plain functions work too):

* ``"connect"``: ``(socket, auth)``. Runs *before* the client gets its CONNECT answer;
  raising :class:`ConnectionRefusedError` (``message``, ``data``) or returning ``False``
  refuses the connection (``44{"message":..,"data":..}``). What it emits and the rooms
  it joins take effect right after the answer (``socket.call`` is not available yet: it
  raises :class:`DisconnectedError`). Middlewares (:meth:`Namespace.use`,
  ``(socket, auth)``) run before it and refuse the same way.
* events: ``(socket, *args)``; the return value is the ack when the client asked for one
  (``None`` → no arguments, a tuple → several arguments, anything else → one argument,
  :data:`NO_ACK` → no ack at all). A handler with a keyword-only ``ack`` parameter gets
  an :class:`Ack` instead, to answer later from any task (see "Acks and timeouts").
* ``"*"``: ``(socket, event, *args)`` for events without their own handler.
* ``"disconnect"``: ``(socket, reason)``, reason one of "client namespace disconnect",
  "server namespace disconnect", "transport close" (also a clean client close), "ping
  timeout", "parse error" / "invalid state" (the client broke the protocol: nothing of
  the bad packet reaches a handler), "slow consumer", "message too big", "transport
  error", "forced close", "server shutting down".

Tasks, ordering, backpressure
-----------------------------
The server owns a nursery (started by :attr:`SocketIOServer.app`'s ``run``, which the
front door starts). A connection's handlers run **one at a time, in arrival order**
(connect handlers included, so an event never overtakes its namespace's connect). The
connection's own task (the Engine.IO session task) reads a message, decodes it and runs
its handler right there; a handler that returns without waiting (the usual ``return
value`` ack, emits, joins) costs no task switch, and its ack goes out at once. When a
handler does wait (``await socket.call(...)``, I/O, a lock), a helper task takes over
reading until it returns: acks keep arriving, the session's end is noticed at once,
and the events received meanwhile wait in a queue of ``max_queue`` (default 16). When
that queue is full the reader stops reading, so the transport stops reading the peer
(TCP backpressure). A peer held back that long stops having its pongs read too, so it
ends with "ping timeout"; whenever a session ends while its handler waits, its sockets
leave their rooms at once and the disconnect handler runs after the handlers already
queued. A slow handler delays only its own connection; other connections keep going.
To do long work without holding the connection's queue, use
:meth:`SocketIOServer.start_background_task`. An exception in a handler goes to the
``on_error`` hook ``(socket, event, exc)`` or, without one, is logged (logger
``volleyio.trio.socketio``); no ack is sent; the connection and the server go on.

Sending
-------
Emits never wait for the peer (``emit``, ``join``, ``leave`` only queue, without a
checkpoint: several calls in a row are not interleaved with other tasks). Each
connection has an outgoing buffer of ``max_buffered_bytes`` (default 1 MiB): an emit that would overflow it closes that
connection with reason "slow consumer" (a client that does not read is cut off instead
of growing memory). ``volatile=True`` emits are dropped instead whenever the transport
is not writable right now (no parked poll, or frames still waiting), and never close
anything. A broadcast encodes its packet once and hands the same
``engineio.PreparedPacket`` objects to every receiver, so a WebSocket frame is built
once for all of them.

Acks and timeouts
-----------------
``await socket.call("event", ...)`` waits for the client's ack; bound it with trio's cancel
scopes (``with trio.fail_after(5): ...``). A cancelled call forgets its ack id (a late
answer is ignored, nothing leaks). A socket that disconnects while awaited raises
:class:`DisconnectedError`. :meth:`SocketIOServer.gather` sends one event to many sockets
and collects their acks until all answered or ``timeout`` elapsed, returning the answers
that arrived: there a timeout argument is the point (a cancel scope would discard the
partial result). ``call`` and ``gather`` take ``as_list=True`` to get the ack's argument
list as received (``[]`` and ``[None]`` stay apart). A handler declaring ``*, ack`` gets
an :class:`Ack`: ``ack(*args)`` answers once (twice raises :class:`AckError`), from any
task, or never.

Scaling out
-----------
Rooms and broadcasts go through the core's :class:`volleyio.socketio.Adapter` (``adapter=``).
With a cluster adapter (``adapter=RedisStreamsAdapter(url)`` or ``ShardedRedisAdapter``),
broadcasts reach the sockets of every server of the cluster, Node servers included, and
the cluster-wide operations (``server_side_emit``, ``fetch_sockets``, ``sockets_join``,
``disconnect_sockets``...) work across servers: see ``volleyio.trio._cluster_api`` and the
"Cluster adapters" documentation page.
"""

from __future__ import annotations

import builtins
import dataclasses
import inspect
import logging
import math
import re
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Mapping, Sequence
from types import CoroutineType
from typing import Any, Literal, TypeVar, Union, overload

import trio

from .. import engineio as _eio
from ..socketio import server as _core
from ..socketio.acks import NO_ACK, AckError, ack_arguments, ack_result
from ..socketio.adapter import Adapter
from ..socketio.client_files import ClientFiles
from ..socketio.recovery import RecoveryConfig
from ..socketio.server import (
    INVALID_NAMESPACE,
    ConnectionRefusedError,
    DisconnectedError,
)
from ..engineio.forwarding import new_node_id, sid_prefix
from ..metrics import LatencyHistogram
from ._acks import Ack, wants_ack
from ._admin import AdminAuth, AdminUI
from ._cluster import ClusterAdapter
from ._cluster_polling import ClusterForwarder, ClusterPolling
from ._cluster_api import ClusterOperations
from ._engineio_server import EngineIOApp, EngineIORequest, EngineIOSession
from ._errors import EngineIOClosed
from ._redis import _RedisAdapter

__all__ = [
    "NO_ACK",
    "Ack",
    "AckError",
    "ConnectionRefusedError",
    "DisconnectedError",
    "Handshake",
    "Namespace",
    "Socket",
    "SocketIOServer",
]

logger = logging.getLogger("volleyio.trio.socketio")

Handler = Callable[..., Any]
Middleware = Callable[["Socket", Any], Any]
#: ``on_error(socket, event, exc)``: sync or async.
ErrorHook = Callable[["Socket", str, Exception], Any]
NamespacePredicate = Callable[[str, Any], Union[bool, Awaitable[bool]]]
Rooms = Union[str, Iterable[str], None]
_H = TypeVar("_H", bound=Callable[..., Any])

#: Every namespace is decided by the trio layer (middlewares, connect handler).
_DEFERRED = _core.NamespaceConfig(authorize=lambda attempt: _core.DEFER)

# Engine.IO reasons as a Socket.IO application knows them (Node reports a client's clean
# Engine.IO close as "transport close").
_REASONS = {"client close": "transport close"}


async def _maybe_await(value: Any) -> Any:
    if value.__class__ is CoroutineType or inspect.isawaitable(value):
        return await value
    return value


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Go on running ``coro`` (already started by hand, it yielded ``yielded``) as part of
    the awaiting task: every trap goes up to trio, every answer goes back down."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # Cancelled, KeyboardInterrupt...: the coroutine decides
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def _is_connect(message: str | bytes) -> bool:
    """A Socket.IO CONNECT packet (``0`` + optional namespace and auth)."""
    return message[:1] == "0"


def _room_list(rooms: Rooms) -> tuple[str, ...]:
    if rooms is None:
        return ()
    if isinstance(rooms, str):
        return (rooms,)
    return tuple(rooms)


class _AckHandler:
    """A registered event handler that takes ``ack=`` (an :class:`Ack`) instead of
    answering with its return value."""

    __slots__ = ("func",)

    def __init__(self, func: Handler) -> None:
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # what ``_handlers`` hold is callable
        return self.func(*args, **kwargs)


def _handler_entry(event: str, func: Handler) -> Handler:
    if event not in ("connect", "disconnect") and wants_ack(func):
        return _AckHandler(func)
    return func


class _Connection:
    """One Engine.IO session as the Socket.IO layer sees it, with its handler queue.

    Two duties per connection: *reading* (take the session's next message, decode, route:
    acks resolve at once, handler work is queued in ``items``) and *running* (the queued
    items, one at a time, in order). The session's own task (``_session_handler``) does
    both inline as long as each item completes without waiting, which is the common case
    (no task switch between reading an event and sending its ack). When an item has to
    wait (a handler awaiting ``call``, I/O, a lock...), reading passes to a helper task
    (``helper_reading``) until the item is done, so acks, disconnects and backpressure go
    on; when an item arrives from outside while the session task waits for the peer (a
    server-side disconnect), a helper task runs the queue (``helper_running``).
    """

    __slots__ = (
        "eio_sid",
        "session",
        "sockets",
        "items",
        "limit",
        "lot",
        "room_lot",
        "home_busy",
        "home_reading",
        "helper_reading",
        "helper_running",
        "closed",
    )

    def __init__(self, session: EngineIOSession, max_queue: int) -> None:
        self.eio_sid: str = session.sid
        self.session = session
        self.sockets: dict[str, Socket] = {}  # namespace -> connected socket
        self.items: deque[tuple[Any, ...]] = deque()
        self.limit = max(max_queue, 1)
        # Created on first use (most connections never wait on them).
        self.lot: trio.lowlevel.ParkingLot | None = None  # the session task waits for items / helpers
        self.room_lot: trio.lowlevel.ParkingLot | None = None  # a reader waits for room in ``items``
        self.home_busy = False  # the session task is running an item
        self.home_reading = False  # the session task waits in ``session.receive()``
        self.helper_reading = False
        self.helper_running = False
        self.closed = False  # the session ended (its sockets are already gone)

    def pop(self) -> tuple[Any, ...]:
        item = self.items.popleft()
        if self.room_lot is not None and len(self.room_lot):
            self.room_lot.unpark()
        return item

    def wake(self) -> None:
        """Wake the session task if it waits for items or for a helper to end."""
        if self.lot is not None and len(self.lot):
            self.lot.unpark()

    async def park(self) -> None:
        if self.lot is None:
            self.lot = trio.lowlevel.ParkingLot()
        await self.lot.park()

    async def park_for_room(self) -> None:
        if self.room_lot is None:
            self.room_lot = trio.lowlevel.ParkingLot()
        await self.room_lot.park()

    def wake_all(self) -> None:
        if self.lot is not None:
            self.lot.unpark_all()
        if self.room_lot is not None:
            self.room_lot.unpark_all()


class Handshake:
    """How a socket's connection was opened (Node's ``socket.handshake``).

    Built from the Engine.IO handshake request (:class:`EngineIORequest`, kept as raw
    bytes: the fields are decoded when read). For code ported from python-socketio,
    whose handlers get a WSGI/ASGI ``environ``: ``environ["HTTP_<NAME>"]`` is
    ``headers["<name>"]``, ``QUERY_STRING`` is ``query_string`` (``query`` is parsed),
    ``REMOTE_ADDR`` is ``address``, ``PATH_INFO`` / ``REQUEST_METHOD`` are ``path`` /
    ``method``, ``wsgi.url_scheme`` is ``"https"`` when ``secure``; :attr:`environ`
    builds that dictionary for code that wants it as is.
    """

    __slots__ = ("request", "auth", "issued")

    def __init__(self, request: EngineIORequest | None, auth: Any, issued: float) -> None:
        #: The Engine.IO handshake request (None for a session opened without one).
        self.request = request
        #: The CONNECT payload of this namespace.
        self.auth = auth
        #: When the socket connected, in milliseconds since the epoch (Node's ``issued``).
        self.issued = issued

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased header names; repeated headers joined with ``", "`` (as Node)."""
        out: dict[str, str] = {}
        if self.request is not None:
            for name, value in self.request.headers:
                out[name] = f"{out[name]}, {value}" if name in out else value
        return out

    @property
    def query(self) -> Mapping[str, str]:
        """The first value of each query parameter of the handshake (``EIO``, ``transport``...)."""
        return self.request.query if self.request is not None else {}

    @property
    def query_string(self) -> str:
        return self.request.query_string if self.request is not None else ""

    @property
    def url(self) -> str:
        """The request target of the handshake (path and query)."""
        return self.request.target if self.request is not None else ""

    @property
    def path(self) -> str:
        return self.request.path if self.request is not None else ""

    @property
    def method(self) -> str:
        return self.request.method if self.request is not None else ""

    @property
    def address(self) -> str:
        """The peer's IP address ("" when unknown)."""
        remote = self.request.remote if self.request is not None else None
        return str(remote[0]) if remote else ""

    @property
    def secure(self) -> bool:
        return self.request.secure if self.request is not None else False

    @property
    def xdomain(self) -> bool:
        """True when the handshake carried an ``Origin`` header (Node's definition)."""
        return self.request is not None and self.request.header("origin") is not None

    @property
    def time(self) -> str:
        """``issued`` as an RFC 7231 date (Node gives ``Date.toString()``)."""
        from email.utils import formatdate

        return formatdate(self.issued / 1000, usegmt=True)

    @property
    def environ(self) -> dict[str, Any]:
        """A WSGI-style dictionary of the handshake, for code ported from python-socketio."""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "PATH_INFO": self.path,
            "QUERY_STRING": self.query_string,
            "RAW_URI": self.url,
            "REMOTE_ADDR": self.address,
            "SERVER_PROTOCOL": f"HTTP/{self.request.http_version}" if self.request is not None else "",
            "wsgi.url_scheme": "https" if self.secure else "http",
        }
        remote = self.request.remote if self.request is not None else None
        if remote:
            environ["REMOTE_PORT"] = str(remote[1])
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            environ[key] = value
        return environ

    def __repr__(self) -> str:
        return f"<Handshake {self.method} {self.url} from {self.address or '?'}>"


class Socket:
    """A client connected to one namespace (Node's ``Socket``; python-socketio's ``sid``).

    ``id`` is the namespace socket id (distinct from the Engine.IO session id
    ``eio_sid``); ``auth`` is the CONNECT payload; ``data`` is free for the application.
    """

    def __init__(
        self,
        server: SocketIOServer,
        nsp: Namespace,
        sid: str,
        connection: _Connection,
        auth: Any,
        recovered: bool = False,
        recovery_refused: str | None = None,
    ) -> None:
        self.server = server
        self.nsp = nsp
        #: The namespace socket id (distinct from the Engine.IO session id ``eio_sid``).
        self.id = sid
        #: The CONNECT payload (``{}`` when the client sent none).
        self.auth = auth
        #: With connection state recovery on, True when this socket got back the id, rooms and ``data`` of
        #: a socket whose connection broke, and the packets it missed are replayed.
        self.recovered = recovered
        #: Why the recovery the client asked for was refused ("unknown session",
        #: "session expired", "offset unavailable"); ``None`` if recovered or not asked.
        self.recovery_refused = recovery_refused
        self._data: Any = server.core.socket_data(sid) if recovered else None
        if self._data is None:
            self._data = {}
            server.core.set_socket_data(sid, self._data)
        self.connected = False
        self._connection = connection
        self._issued = time.time() * 1000
        # ack id -> callback(args, or None when the socket disconnected first)
        self._acks: dict[int, Callable[[list[Any] | None], None]] = {}

    @property
    def namespace(self) -> str:
        return self.nsp.name

    @property
    def data(self) -> Any:
        """Free for the application (a dict at first). With connection state recovery
        it is kept with the session and given back to the recovered socket (the same
        object in one process; with a cluster it must be msgpack-encodable)."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value
        self.server.core.set_socket_data(self.id, value)

    @property
    def handshake(self) -> Handshake:
        """The connection's handshake (headers, query, address, secure, connect time,
        auth; see :class:`Handshake`; python-socketio's ``environ`` maps onto it)."""
        return Handshake(getattr(self._connection.session, "request", None), self.auth, self._issued)

    @property
    def eio_sid(self) -> str:
        return self._connection.eio_sid

    @property
    def transport(self) -> str:
        """``"polling"`` or ``"websocket"`` (changes when the client upgrades)."""
        return str(self._connection.session.transport)

    @property
    def rooms(self) -> frozenset[str]:
        return self.server.core.rooms(self.id)

    @property
    def pending_acks(self) -> int:
        """Acks this server is waiting for from this socket."""
        return len(self._acks)

    async def emit(self, event: str, *args: Any, volatile: bool = False) -> None:
        """Send an event to this socket (dropped silently once it is disconnected; with
        connection state recovery it is kept for the socket's recovery, as Node does)."""
        # No wake-up needed: the transport's waker flushes the frame, and an Engine.IO
        # event the send may cause (slow consumer) is delivered on the next tick.
        core = self.server.core
        if core.emit(self.id, event, *args, volatile=volatile) is None and core.recovery is not None and not volatile:
            if core.socket_info(self.id) is None:  # gone: a broadcast to its own room is kept
                core.broadcast(self.namespace, event, *args, rooms=(self.id,))
        if self.server._observer is not None:
            self.server._observer.event_sent(self, event, args)

    async def send(self, *args: Any) -> None:
        """``emit("message", *args)``."""
        await self.emit("message", *args)

    async def call(self, event: str, *args: Any, as_list: bool = False) -> Any:
        """Emit and wait for the client's ack; returns its arguments: ``None`` for none,
        the value for one, a tuple for several -- or, with ``as_list``, the argument list
        exactly as received (``[]`` and ``[None]`` stay apart). Time-bound it with a trio
        cancel scope."""
        if not self.connected:
            raise DisconnectedError(f"socket {self.id} is not connected")
        core = self.server.core
        ack_id = core.emit(self.id, event, *args, with_ack=True)
        if ack_id is None:
            raise DisconnectedError(f"socket {self.id} is not connected")
        answer: list[list[Any] | None] = []
        arrived = trio.Event()

        def resolve(args: list[Any] | None) -> None:
            answer.append(args)
            arrived.set()

        self._acks[ack_id] = resolve
        server = self.server
        started = trio.current_time()
        server._acks_sent += 1
        try:
            await arrived.wait()
        finally:
            if self._acks.pop(ack_id, None) is not None:
                core.cancel_ack(self.id, ack_id)
        if answer[0] is None:
            raise DisconnectedError(f"socket {self.id} disconnected before answering")
        server.ack_latency.observe(trio.current_time() - started)
        return ack_result(answer[0], as_list)

    async def join(self, rooms: str | Iterable[str]) -> None:
        server = self.server
        for room in _room_list(rooms):
            server.core.join(self.id, room)
            if server._observer is not None and self.connected:
                server._observer.room_changed(self, room, True)

    async def leave(self, rooms: str | Iterable[str]) -> None:
        server = self.server
        for room in _room_list(rooms):
            server.core.leave(self.id, room)
            if server._observer is not None and self.connected:
                server._observer.room_changed(self, room, False)

    async def disconnect(self, close: bool = False) -> None:
        """Server-side namespace disconnect (``41``): the client reports "io server
        disconnect" and does not reconnect; its other namespaces stay connected, unless
        ``close`` (Node's ``disconnect(true)``): then every namespace of the connection
        gets ``41`` and the Engine.IO connection is closed."""
        await self.server.disconnect(self.id, close=close)

    def _disconnected(self) -> None:
        self.connected = False
        self.nsp.sockets.pop(self.id, None)
        if self._connection.sockets.get(self.namespace) is self:
            del self._connection.sockets[self.namespace]
        acks, self._acks = self._acks, {}
        for resolve in acks.values():
            resolve(None)

    def __repr__(self) -> str:
        return f"<Socket {self.id} {self.namespace} {'connected' if self.connected else 'disconnected'}>"


class Namespace:
    """Handlers, middlewares and sockets of one namespace (``server.of(name)``).

    A dynamic namespace (``server.of(re.compile(...))`` or ``server.of(predicate)``) is a
    parent: its handlers and middlewares apply to every child namespace it creates on
    the first CONNECT to a matching name; emitting on it reaches every child.
    """

    def __init__(
        self,
        server: SocketIOServer,
        name: str,
        *,
        matcher: NamespacePredicate | None = None,
        parent: Namespace | None = None,
    ) -> None:
        self.server = server
        self.name = name
        self.parent = parent
        self._matcher = matcher
        self._handlers: dict[str, Handler] = parent._handlers if parent is not None else {}
        self._middlewares: list[Middleware] = parent._middlewares if parent is not None else []
        #: Connected sockets by id (for a dynamic parent: empty, see ``children``).
        self.sockets: dict[str, Socket] = {}
        #: Child namespaces created by a dynamic parent.
        self.children: dict[str, Namespace] = {}

    @property
    def dynamic(self) -> bool:
        return self._matcher is not None

    @overload
    def on(self, event: str, handler: None = None) -> Callable[[_H], _H]: ...

    @overload
    def on(self, event: str, handler: _H) -> _H: ...

    def on(self, event: str, handler: _H | None = None) -> _H | Callable[[_H], _H]:
        """Register ``handler`` for ``event``; without ``handler``, a decorator."""

        def register(func: _H) -> _H:
            self._handlers[event] = _handler_entry(event, func)
            return func

        if handler is not None:
            return register(handler)
        return register

    def event(self, handler: _H) -> _H:
        """Decorator: the function's name is the event."""
        self._handlers[handler.__name__] = _handler_entry(handler.__name__, handler)
        return handler

    def use(self, middleware: Middleware) -> Middleware:
        """Add a connect middleware ``(socket, auth)``, run in order before the connect
        handler; raising :class:`ConnectionRefusedError` refuses the connection."""
        self._middlewares.append(middleware)
        return middleware

    async def emit(
        self, event: str, *args: Any, to: Rooms = None, skip: Rooms = None, volatile: bool = False, local: bool = False
    ) -> None:
        """Broadcast to the namespace, or to the members of ``to`` (a room, a socket id —
        each socket is in the room named after its id — or several), minus the members of
        ``skip`` (rooms or socket ids). With a cluster adapter the other servers deliver
        it too, unless ``local``."""
        rooms, except_rooms = _room_list(to), _room_list(skip)
        server = self.server
        for nsp in self._concrete():
            # Queued for the other servers first when there is room (they deliver while
            # this one does), else after the local delivery (which never waits).
            queued = server._cluster is None or local or server._cluster_publish_nowait(
                nsp.name, [event, *args], rooms, except_rooms, volatile
            )
            server.core.broadcast(nsp.name, event, *args, rooms=rooms, except_rooms=except_rooms, volatile=volatile)
            if not queued:
                await server._cluster_publish(nsp.name, [event, *args], rooms, except_rooms, volatile)

    async def send(self, *args: Any, to: Rooms = None, skip: Rooms = None) -> None:
        await self.emit("message", *args, to=to, skip=skip)

    async def gather(
        self,
        event: str,
        *args: Any,
        to: Rooms = None,
        skip: Rooms = None,
        timeout: float,
        as_list: bool = False,
        local: bool = False,
    ) -> dict[str, Any]:
        """Broadcast expecting an ack from every receiver; waits until all answered (or
        disconnected) or ``timeout`` seconds passed. Returns ``{socket id: ack value}`` for
        the answers that arrived (the value as :meth:`Socket.call` returns it, with the
        same ``as_list``). With a cluster adapter, the sockets of every server answer
        (unless ``local``; see :meth:`SocketIOServer.gather`)."""
        server = self.server
        if server._cluster is not None and not local:
            return await server._cluster_gather(self, event, args, to, skip, timeout, as_list)
        core = server.core
        rooms, except_rooms = _room_list(to), _room_list(skip)
        results: dict[str, Any] = {}
        waiting: dict[str, tuple[Socket, int]] = {}
        done = trio.Event()
        started = trio.current_time()
        latency = server.ack_latency

        def resolver(sid: str) -> Callable[[list[Any] | None], None]:
            def resolve(args: list[Any] | None) -> None:
                if waiting.pop(sid, None) is not None and args is not None:
                    results[sid] = ack_result(args, as_list)
                    latency.observe(trio.current_time() - started)
                if not waiting:
                    done.set()

            return resolve

        for nsp in self._concrete():
            ack_id, targets = core.broadcast_with_ack(nsp.name, event, *args, rooms=rooms, except_rooms=except_rooms)
            for sid in targets:
                socket = server._sockets.get(sid)
                if socket is None or not socket.connected:
                    core.cancel_ack(sid, ack_id)
                    continue
                waiting[sid] = (socket, ack_id)
                socket._acks[ack_id] = resolver(sid)
        server._acks_sent += len(waiting)
        try:
            if waiting:
                with trio.move_on_after(timeout):
                    await done.wait()
        finally:
            for sid, (socket, ack_id) in waiting.items():
                socket._acks.pop(ack_id, None)
                core.cancel_ack(sid, ack_id)
        return results

    def members(self, room: str) -> frozenset[str]:
        """Socket ids in ``room`` (for a dynamic parent: across its children)."""
        members: set[str] = set()
        for nsp in self._concrete():
            members |= self.server.core.adapter.members(nsp.name, room)
        return frozenset(members)

    async def disconnect_all(self) -> None:
        for nsp in self._concrete():
            for sid in list(nsp.sockets):
                self.server.core.disconnect(sid)
        self.server._route_events_nowait()
        self.server._flush()

    def _concrete(self) -> list[Namespace]:
        return list(self.children.values()) if self.dynamic else [self]

    async def _matches(self, name: str, auth: Any) -> bool:
        assert self._matcher is not None
        return bool(await _maybe_await(self._matcher(name, auth)))

    def __repr__(self) -> str:
        return f"<Namespace {self.name}{' (dynamic)' if self.dynamic else ''}>"


class SocketIOApp:
    """The Socket.IO server as an :class:`HttpMount` for ``serve(mounts={path: app})``.

    Its ``run`` starts the server's tasks (Engine.IO timers, connect timeouts, the
    nursery the handlers run in); the front door starts it before accepting.
    """

    def __init__(self, server: SocketIOServer) -> None:
        self.server = server

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.server._run(task_status)

    def handle_request(self, request: Any, http: Any) -> Any:
        """One request of the Socket.IO endpoint (see :class:`~volleyio.trio.HttpMount`):
        the Engine.IO endpoint's coroutine."""
        return self.server.engineio.handle_request(request, http)


class SocketIOServer(ClusterOperations):
    """A Socket.IO v5 server (see the module documentation).

    Options: ``path`` (mount prefix, ``/socket.io/``), ``ping_interval``/``ping_timeout``/
    ``upgrade_timeout``/``connect_timeout`` (seconds), ``max_payload`` (bytes per HTTP body
    or WebSocket message), ``transports``, ``cors_origins`` (``"*"`` or a list; off by
    default), ``cors_credentials``, ``allowed_origins`` (handshake Origin check; default
    same-origin when an Origin header is present, plus the CORS origins), ``cookie``
    (sticky-session cookie name), ``max_attachments`` (binary attachments per packet),
    ``max_buffered_bytes`` (outgoing buffer per connection, "slow consumer" above),
    ``max_queue`` (queued events per connection before the reader stops reading),
    ``adapter`` (rooms/broadcast; in-memory by default; a :class:`ClusterAdapter` such as
    ``RedisStreamsAdapter(url=...)`` joins a cluster), ``engineio_config`` (a full
    ``engineio.ServerConfig`` overriding the Engine.IO options above), ``serve_client``
    (serve the browser client at ``<path>socket.io.js`` etc., on by default; the
    attribute of the same name switches it later), ``cluster_polling`` (with a Redis
    cluster adapter: ``True`` or a :class:`ClusterPolling` lets any node serve any
    request of any session, so the balancer need not be sticky; see the "Cluster
    adapters" page), ``connection_state_recovery`` (``True`` or a
    :class:`~volleyio.socketio.RecoveryConfig`: Socket.IO 4.6 connection state recovery,
    see "Connection state recovery" in the docs; one process only for now, a cluster
    adapter is refused).
    """

    def __init__(
        self,
        *,
        path: str = "/socket.io/",
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        upgrade_timeout: float = 10.0,
        connect_timeout: float = 45.0,
        max_payload: int = 1_000_000,
        transports: Sequence[str] = ("polling", "websocket"),
        cors_origins: Sequence[str] | Literal["*"] | None = None,
        cors_credentials: bool = False,
        allowed_origins: Sequence[str] | Literal["*"] | None = None,
        cookie: str | None = None,
        max_attachments: int = 10,
        max_buffered_bytes: int = 1 << 20,
        max_queue: int = 16,
        adapter: Adapter | ClusterAdapter | None = None,
        engineio_config: _eio.ServerConfig | None = None,
        connection_state_recovery: RecoveryConfig | bool = False,
        on_error: ErrorHook | None = None,
        serve_client: bool = True,
        cluster_polling: bool | ClusterPolling = False,
    ) -> None:
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        self.path = path if path.endswith("/") else path + "/"
        if engineio_config is None:
            cors = None
            if cors_origins is not None:
                cors = _eio.CorsConfig(
                    allowed_origins=_eio.normalize_origins(cors_origins),
                    credentials=cors_credentials,
                )
            engineio_config = _eio.ServerConfig(
                ping_interval_ms=max(1, round(ping_interval * 1000)),
                ping_timeout_ms=max(1, round(ping_timeout * 1000)),
                upgrade_timeout_ms=max(1, round(upgrade_timeout * 1000)),
                max_payload=max_payload,
                transports=tuple(transports),
                max_buffered_bytes=max_buffered_bytes,
                allowed_origins=None if allowed_origins is None else _eio.normalize_origins(allowed_origins),
                cors=cors,
                cookie=cookie,
            )
        self.max_queue = max_queue
        recovery = RecoveryConfig() if connection_state_recovery is True else connection_state_recovery or None
        if recovery is not None and isinstance(adapter, ClusterAdapter):
            # Offsets would be local to one process and other nodes' broadcasts would
            # not be kept: a recovery could then replay with a gap. Refuse instead.
            raise ValueError("connection_state_recovery is not supported with a cluster adapter yet")
        #: The cluster adapter (None: this server is alone).
        self._cluster = adapter if isinstance(adapter, ClusterAdapter) else None
        rooms: Adapter | None = self._cluster.rooms if self._cluster is not None else adapter  # type: ignore[assignment]
        #: The Engine.IO driver (its ``core`` is the sans-I/O ``EngineIOServer``).
        if cluster_polling:
            if not isinstance(self._cluster, _RedisAdapter):
                raise ValueError("cluster_polling needs a Redis cluster adapter (RedisStreamsAdapter, ShardedRedisAdapter)")
            options = cluster_polling if isinstance(cluster_polling, ClusterPolling) else ClusterPolling()
            node = self._cluster.uid if self._cluster.uid and "." not in self._cluster.uid else new_node_id()
            engineio_config = dataclasses.replace(engineio_config, sid_prefix=sid_prefix(node))
        self.engineio = EngineIOApp(self._session_handler, config=engineio_config)
        if cluster_polling:
            assert isinstance(self._cluster, _RedisAdapter)
            self.engineio.forwarder = ClusterForwarder(
                self.engineio,
                self._cluster._client,
                node,
                channel_prefix=self._cluster.channel_prefix,
                forward_timeout=options.forward_timeout,
                max_requests=options.max_requests,
                max_bytes=options.max_bytes,
                max_queue=options.max_queue,
                ws_queue=options.ws_queue,
            )
        #: The sans-I/O Socket.IO core.
        self.core = _core.SocketIOServer(
            self.engineio,
            _core.SocketIOConfig(
                connect_timeout_ms=max(1, round(connect_timeout * 1000)),
                max_attachments=max_attachments,
                namespaces={},
                recovery=recovery,
            ),
            rooms,
            prepare=_eio.PreparedPacket,
            namespace_resolver=self._resolve_namespace_config,
        )
        #: The HttpMount to put next to other routes: ``serve(..., mounts={sio.path: sio.app})``.
        self.app = SocketIOApp(self)
        self._client_files = ClientFiles(self.path)
        self.serve_client = serve_client
        self._namespaces: dict[str, Namespace] = {"/": Namespace(self, "/")}
        self._parents: list[Namespace] = []
        self._connections: dict[str, _Connection] = {}
        self._sockets: dict[str, Socket] = {}  # connected and being-connected sockets by id
        self._nursery: trio.Nursery | None = None
        self._timer_changed = trio.Event()
        self._timer_at = math.inf
        self._on_error: ErrorHook | None = on_error
        #: Latency of the acknowledgements this server waited for (``call``, ``gather``),
        #: in seconds: read by :mod:`volleyio.metrics`.
        self.ack_latency = LatencyHistogram()
        self._acks_sent = 0  # acknowledgements asked of clients (call, gather receivers)
        # The admin UI instrumentation (``instrument()``), None when off: one check per event.
        self._observer: Any = None
        self._admin: AdminUI | None = None

    @property
    def serve_client(self) -> bool:
        """Whether ``<path>socket.io.js`` (and ``.min.js``, ``.esm.min.js``, their ``.map``)
        are served from the package (see ``volleyio.socketio.client_files``)."""
        return self.engineio.core.request_hook is not None

    @serve_client.setter
    def serve_client(self, value: bool) -> None:
        self.engineio.core.request_hook = self._client_files.respond if value else None

    # ------------------------------------------------------------------ registration

    def of(self, namespace: str | re.Pattern[str] | NamespacePredicate) -> Namespace:
        """The namespace ``namespace`` (created if new). A compiled regex (matched with
        ``fullmatch``) or a predicate ``(name, auth) -> bool`` (may be async) declares a
        dynamic namespace; the same regex or predicate gives the same parent again."""
        if isinstance(namespace, str):
            if not namespace.startswith("/"):
                raise ValueError("a namespace starts with '/'")
            nsp = self._namespaces.get(namespace)
            if nsp is None:
                nsp = self._namespaces[namespace] = Namespace(self, namespace)
                if self._cluster is not None and self._nursery is not None:
                    self._cluster.ensure_namespace(namespace)
            return nsp
        if isinstance(namespace, re.Pattern):
            pattern = namespace
            for parent in self._parents:
                if parent.name == pattern.pattern:
                    return parent
            nsp = Namespace(self, pattern.pattern, matcher=lambda name, auth: pattern.fullmatch(name) is not None)
        elif callable(namespace):
            for parent in self._parents:
                if parent._matcher is namespace:
                    return parent
            nsp = Namespace(self, getattr(namespace, "__name__", repr(namespace)), matcher=namespace)
        else:
            raise TypeError("a namespace is a str, a compiled regex or a predicate")
        self._parents.append(nsp)
        return nsp

    @overload
    def on(self, event: str, handler: None = None, *, namespace: str = "/") -> Callable[[_H], _H]: ...

    @overload
    def on(self, event: str, handler: _H, *, namespace: str = "/") -> _H: ...

    def on(self, event: str, handler: _H | None = None, *, namespace: str = "/") -> _H | Callable[[_H], _H]:
        """``@sio.on("event")`` / ``sio.on("event", handler)`` (python-socketio's shape)."""
        if handler is not None:
            return self.of(namespace).on(event, handler)
        return self.of(namespace).on(event)

    @overload
    def event(self, handler: None = None, *, namespace: str = "/") -> Callable[[_H], _H]: ...

    @overload
    def event(self, handler: _H, *, namespace: str = "/") -> _H: ...

    def event(self, handler: _H | None = None, *, namespace: str = "/") -> _H | Callable[[_H], _H]:
        """``@sio.event`` or ``@sio.event(namespace=...)``: the function's name is the event."""
        nsp = self.of(namespace)
        if handler is not None:
            return nsp.event(handler)
        return nsp.event

    def use(self, middleware: Middleware, *, namespace: str = "/") -> Middleware:
        return self.of(namespace).use(middleware)

    def on_error(self, hook: ErrorHook) -> ErrorHook:
        """Set the hook ``hook(socket, event, exc)`` (sync or async) that sees every
        exception raised by a handler of this server: ``event`` is the event name
        (``"connect"``, ``"disconnect"`` for those handlers and middlewares). Without a
        hook the exception is logged (logger ``volleyio.trio.socketio``). Either way the
        client gets no acknowledgement for that event (a connect handler's failure refuses
        the connection with ``"Internal server error"``) and the connection goes on. The
        hook runs in the connection's handler sequence; its own exceptions are logged.
        Usable as a decorator; also the ``on_error=`` constructor option."""
        self._on_error = hook
        return hook

    # ------------------------------------------------------------------ application API

    @property
    def namespaces(self) -> Mapping[str, Namespace]:
        """Concrete namespaces by name (static ones and children of dynamic ones)."""
        return self._namespaces

    def get_socket(self, sid: str) -> Socket | None:
        socket = self._sockets.get(sid)
        return socket if socket is not None and socket.connected else None

    async def emit(
        self,
        event: str,
        *args: Any,
        to: Rooms = None,
        skip: Rooms = None,
        namespace: str | None = None,
        volatile: bool = False,
        local: bool = False,
    ) -> None:
        """Emit to everyone in ``namespace`` (default ``/``), or to the members of ``to``
        (room names and/or socket ids), minus the members of ``skip``. With
        ``to=<socket id>`` and no ``namespace``, the socket's namespace is used. With a
        cluster adapter every server delivers it, unless ``local``."""
        await self._namespace_for(namespace, to).emit(event, *args, to=to, skip=skip, volatile=volatile, local=local)

    async def send(self, *args: Any, to: Rooms = None, skip: Rooms = None, namespace: str | None = None) -> None:
        await self.emit("message", *args, to=to, skip=skip, namespace=namespace)

    async def call(
        self, event: str, *args: Any, to: str, namespace: str | None = None, as_list: bool = False
    ) -> Any:
        """Emit to socket ``to`` and wait for its ack (see :meth:`Socket.call`)."""
        socket = self.get_socket(to)
        if socket is None or (namespace is not None and socket.namespace != namespace):
            raise DisconnectedError(f"no connected socket {to!r}")
        return await socket.call(event, *args, as_list=as_list)

    async def gather(
        self,
        event: str,
        *args: Any,
        to: Rooms = None,
        skip: Rooms = None,
        namespace: str | None = None,
        timeout: float,
        as_list: bool = False,
        local: bool = False,
    ) -> dict[str, Any]:
        """Broadcast with acks (see :meth:`Namespace.gather`). With a cluster adapter the
        sockets of every server answer: keys are socket ids, except for answers from
        Node servers (their adapter does not say which socket answered): ``"~0"``,
        ``"~1"``... Across the cluster an answer carries only its first argument (the
        Node adapters' wire format), so ``as_list`` gives ``[value]`` for a remote answer."""
        return await self._namespace_for(namespace, to).gather(
            event, *args, to=to, skip=skip, timeout=timeout, as_list=as_list, local=local
        )

    # Socket ids are unique across namespaces: ``namespace`` is accepted for
    # python-socketio's signatures and not needed.

    async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        self.core.join(sid, room)
        self._room_changed(sid, room, True)

    async def leave_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        self.core.leave(sid, room)
        self._room_changed(sid, room, False)

    async def close_room(self, room: str, namespace: str = "/") -> None:
        """Make every member leave ``room``."""
        for sid in self.of(namespace).members(room):
            self.core.leave(sid, room)
            self._room_changed(sid, room, False)

    def _room_changed(self, sid: str, room: str, joined: bool) -> None:
        if self._observer is not None:
            socket = self._sockets.get(sid)
            if socket is not None and socket.connected:
                self._observer.room_changed(socket, room, joined)

    def rooms(self, sid: str, namespace: str | None = None) -> frozenset[str]:
        return self.core.rooms(sid)

    async def disconnect(self, sid: str, namespace: str | None = None, *, close: bool = False) -> None:
        """Disconnect socket ``sid`` from its namespace (the client gets ``41``); with
        ``close``, all the sockets of its connection, then the connection itself."""
        socket = self._sockets.get(sid)
        if close and socket is not None:
            connection = socket._connection
            for other in list(connection.sockets.values()):
                self.core.disconnect(other.id)
            self.core.close_connection(connection.eio_sid, trio.current_time())
        else:
            self.core.disconnect(sid)
        self._route_events_nowait()
        self._flush()

    def instrument(
        self,
        *,
        auth: AdminAuth,
        namespace: str = "/admin",
        readonly: bool = False,
        server_id: str | None = None,
        mode: Literal["development", "production"] = "development",
        stats_interval: float = 2.0,
    ) -> AdminUI:
        """Speak the protocol of the Socket.IO Admin UI (``@socket.io/admin-ui``) on
        ``namespace``, so its dashboard shows this server's sockets, rooms, namespaces
        and events and can act on them (see :doc:`observability`). ``auth``: ``False``,
        ``{"type": "basic", "username": ..., "password": <bcrypt hash>}`` (needs the
        ``bcrypt`` package) or ``{"type": "basic", "username": ...,
        "plaintext_password": ...}``. ``readonly`` refuses the dashboard's operations;
        ``mode="production"`` sends only the statistics (no per-socket and per-event
        reports). Returns the :class:`volleyio.trio.AdminUI` object."""
        if self._admin is not None:
            raise RuntimeError("this server is instrumented already")
        admin = AdminUI(
            self, auth=auth, namespace=namespace, readonly=readonly, server_id=server_id, mode=mode,
            stats_interval=stats_interval,
        )
        self._admin = admin
        if admin.development:
            self._observer = admin
        if self._nursery is not None:
            self._nursery.start_soon(admin.run)
        return admin

    def start_background_task(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``func(*args)`` in the server's nursery (errors are logged)."""
        if self._nursery is None:
            raise RuntimeError("the server is not running")
        self._nursery.start_soon(self._background, func, args)

    def statistics(self) -> dict[str, int]:
        return {
            "connections": len(self._connections),
            "sockets": sum(1 for socket in self._sockets.values() if socket.connected),
            "pending_acks": sum(len(socket._acks) for socket in self._sockets.values()),
            "queued_events": sum(len(conn.items) for conn in self._connections.values()),
        }

    async def serve(
        self,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        metrics_path: str | None = None,
        metrics_registry: Any = None,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
        **serve_options: Any,
    ) -> None:
        """Serve Socket.IO on ``path`` until cancelled: ``server = await
        nursery.start(sio.serve, host, port)`` gives the ``WebSocketServer``. Other options
        go to :func:`volleyio.trio.serve` (``handler=`` and ``mounts=`` are merged).

        ``metrics_path`` (e.g. ``"/metrics"``): answer ``GET`` there with the Prometheus
        exposition (needs ``prometheus-client``, see :mod:`volleyio.metrics`) of
        ``metrics_registry`` -- by default a registry of its own holding this server's
        :class:`~volleyio.metrics.VolleyioCollector` (and the front door's connection
        counts); a registry you pass is served as it is. ``process_request`` still sees
        every other request."""
        from ._server import serve

        mounts = dict(serve_options.pop("mounts", None) or {})
        mounts[self.path] = self.app
        handler = serve_options.pop("handler", None)
        if metrics_path is not None:
            from ..metrics import MetricsEndpoint, VolleyioCollector

            endpoint = MetricsEndpoint(
                metrics_registry, path=metrics_path, next=serve_options.pop("process_request", None)
            )
            if metrics_registry is None:
                collector = VolleyioCollector(self)
                endpoint.register(collector)
                task_status = _AddFrontDoor(task_status, collector)
            serve_options["process_request"] = endpoint
        await serve(handler, host, port, mounts=mounts, task_status=task_status, **serve_options)

    # ------------------------------------------------------------------ running

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        if self._nursery is not None:
            raise RuntimeError("this SocketIOServer is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._cluster is not None:
                    for name in self._namespaces:
                        self._cluster.ensure_namespace(name)
                    await nursery.start(self._cluster.run, self)
                await nursery.start(self._run_engineio)
                nursery.start_soon(self._timer_loop)
                if self._admin is not None:
                    nursery.start_soon(self._admin.run)
                task_status.started()
        finally:
            self._nursery = None

    async def _run_engineio(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.engineio.run(task_status=task_status)

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.next_deadline()
            self._timer_at = deadline if deadline is not None else math.inf
            self._timer_changed = trio.Event()
            with trio.move_on_at(self._timer_at):
                await self._timer_changed.wait()
            self.core.handle_timers(trio.current_time())
            self._route_events_nowait()
            self._flush()

    def _flush(self) -> None:
        self.engineio.wake()

    async def _guarded(self, func: Callable[..., Any], args: Sequence[Any], what: str) -> Any:
        """Run a handler; an exception is logged and becomes :class:`_HandlerFailed`."""
        try:
            return await _maybe_await(func(*args))
        except Exception:  # noqa: BLE001 - an application bug never takes the server down
            logger.exception("Socket.IO handler %s failed", what)
            raise _HandlerFailed from None

    async def _background(self, func: Callable[..., Any], args: Sequence[Any]) -> None:
        try:
            await self._guarded(func, args, getattr(func, "__name__", "background task"))
        except _HandlerFailed:
            pass

    # ------------------------------------------------------------------ per connection

    async def _session_handler(self, session: EngineIOSession) -> None:
        """Runs once per Engine.IO session (in the Engine.IO driver's task): reads the
        session and runs its handlers (see :class:`_Connection`)."""
        if self._nursery is None:  # pragma: no cover - the mount starts us before serving
            return
        connection = _Connection(session, self.max_queue)
        self._connections[connection.eio_sid] = connection
        self.core.engineio_connected(connection.eio_sid, trio.current_time())
        if self._timer_at == math.inf:
            self._timer_changed.set()
        items = connection.items
        try:
            while True:
                if items and not connection.helper_running:
                    await self._run_inline(connection, connection.pop())
                elif connection.helper_reading or (
                    connection.closed and connection.helper_running
                ):
                    await connection.park()  # woken by a queued item or a helper that ends
                elif connection.closed:
                    return
                else:
                    await self._read_one(connection, True)
        finally:
            self._lost(connection, "server shutting down")

    async def _run_inline(self, connection: _Connection, item: tuple[Any, ...]) -> None:
        """Run one item in the session task; if it has to wait, a helper reads meanwhile."""
        connection.home_busy = True
        try:
            coro = self._run_event(item[1], item[2]) if item[0] == "event" else self._run_item(connection, item)
            try:
                yielded = coro.send(None)
            except StopIteration:
                return
            if not connection.helper_reading and not connection.closed and self._nursery is not None:
                connection.helper_reading = True
                self._nursery.start_soon(self._reader, connection)
            await _resume(coro, yielded)
        finally:
            connection.home_busy = False

    async def _reader(self, connection: _Connection) -> None:
        """Reads for a session task held up by an item; hands reading back after the
        first message that arrives once the item is done."""
        try:
            while not connection.closed and await self._read_one(connection, False) and connection.home_busy:
                pass
        finally:
            connection.helper_reading = False
            connection.wake()

    async def _runner(self, connection: _Connection) -> None:
        """Runs the items queued from outside while the session task waits for the peer."""
        try:
            while connection.items:
                await self._run_item(connection, connection.pop())
        finally:
            connection.helper_running = False
            connection.wake()

    async def _read_one(self, connection: _Connection, home: bool) -> bool:
        """Read one message and route its events; False once the session has ended.

        While ``items`` is full this waits for room first: the transport stops reading the
        peer (backpressure). A session that ends meanwhile is handled at once, without
        waiting for a handler that may never end."""
        if len(connection.items) >= connection.limit and not await self._wait_room(connection):
            self._lost(connection, connection.session.disconnect_reason or "transport close")
            return False
        connection.home_reading = home
        try:
            # Whatever arrived, up to the room left in ``items``: one decode round per batch.
            # A CONNECT ends the batch: its namespace must be joined (by its handlers, in
            # this task) before the packets that follow it are decoded.
            messages = await connection.session.receive_many(
                connection.limit - len(connection.items), until=_is_connect
            )
        except EngineIOClosed as exc:
            connection.home_reading = False
            self._lost(connection, exc.reason)
            return False
        finally:
            connection.home_reading = False
        core = self.core
        now = trio.current_time()
        eio_sid = connection.eio_sid
        for message in messages:
            core.engineio_message(eio_sid, message, now)
        events = core.take_events()
        if events:
            self._route_all(events)
        return True

    async def _wait_room(self, connection: _Connection) -> bool:
        """Wait until ``items`` has room; False if the session ended first."""
        room = False
        async with trio.open_nursery() as nursery:

            async def watch_close() -> None:
                await connection.session.wait_closed()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_close)
            while len(connection.items) >= connection.limit and not connection.closed:
                await connection.park_for_room()
            room = not connection.closed
            nursery.cancel_scope.cancel()
        return room

    def _lost(self, connection: _Connection, reason: str) -> None:
        """The session ended: its sockets leave at once; disconnect handlers are queued."""
        if connection.closed:
            return
        connection.closed = True
        self.core.engineio_disconnected(connection.eio_sid, _REASONS.get(reason, reason), trio.current_time())
        self._connections.pop(connection.eio_sid, None)
        self._route_events_nowait()
        connection.wake_all()
        self._flush()

    def _enqueue(self, connection: _Connection, item: tuple[Any, ...]) -> None:
        connection.items.append(item)
        if connection.home_reading and not connection.helper_running and self._nursery is not None:
            # The session task waits for the peer and cannot be interrupted without
            # risking a message: a helper runs the queue meanwhile.
            connection.helper_running = True
            self._nursery.start_soon(self._runner, connection)
        else:
            connection.wake()

    def _route_events_nowait(self) -> None:
        events = self.core.take_events()
        if events:
            self._route_all(events)

    def _route_all(self, events: list[_core.Event]) -> None:
        """Bookkeeping that must happen at once (acks, sockets leaving); handler work is
        queued on its connection as ``(kind, connection, ...)``."""
        sockets = self._sockets
        for event in events:
            cls = event.__class__
            if cls is _core.EventReceived:
                assert isinstance(event, _core.EventReceived)
                socket = sockets.get(event.sid)
                if socket is not None:
                    self._enqueue(socket._connection, ("event", socket, event))
            elif cls is _core.AckReceived:
                assert isinstance(event, _core.AckReceived)
                socket = sockets.get(event.sid)
                if socket is not None:
                    resolve = socket._acks.pop(event.ack_id, None)
                    if resolve is not None:
                        resolve(event.args)
            elif cls is _core.ConnectRequested:
                assert isinstance(event, _core.ConnectRequested)
                connection = self._connections.get(event.eio_sid)
                if connection is not None:
                    self._enqueue(connection, ("connect", event))
            elif cls is _core.SocketDisconnected:
                assert isinstance(event, _core.SocketDisconnected)
                socket = sockets.pop(event.sid, None)
                if socket is not None:
                    was_connected = socket.connected
                    socket._disconnected()
                    if was_connected:
                        if self._observer is not None:
                            self._observer.socket_disconnected(socket, event.reason)
                        self._enqueue(socket._connection, ("disconnect", socket, event.reason))
            # SocketConnected: the connect flow already knows

    async def _run_item(self, connection: _Connection, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "event":
            await self._run_event(item[1], item[2])
        elif kind == "connect":
            await self._run_connect(connection, item[1])
        else:
            socket, reason = item[1], item[2]
            handler = socket.nsp._handlers.get("disconnect")
            if handler is not None:
                try:
                    await _maybe_await(handler(socket, reason))
                except Exception as exc:  # noqa: BLE001
                    await self._handler_failed(socket, "disconnect", exc)

    async def _run_event(self, socket: Socket, event: _core.EventReceived) -> None:
        handlers = socket.nsp._handlers
        name = event.event
        handler: Any = handlers.get(name if name.__class__ is str else str(name))
        if self._observer is not None:
            self._observer.event_received(socket, name, event.args)
        catch_all = handler is None
        ack: Ack | None = None
        try:
            if not catch_all:
                if handler.__class__ is _AckHandler:
                    ack = self._ack_for(socket, event.ack_id)
                    result = handler.func(socket, *event.args, ack=ack)
                else:
                    result = handler(socket, *event.args)
            else:
                handler = handlers.get("*")
                if handler is None:
                    return  # no listener: no ack either (Node)
                if handler.__class__ is _AckHandler:
                    ack = self._ack_for(socket, event.ack_id)
                    result = handler.func(socket, name, *event.args, ack=ack)
                else:
                    result = handler(socket, name, *event.args)
            if result.__class__ is CoroutineType or inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # noqa: BLE001 - an application bug never takes the server down
            await self._handler_failed(socket, str(name), exc)
            return
        if event.ack_id is not None and ack is None:
            answer = ack_arguments(result)
            if answer is None:
                return  # NO_ACK: the handler declines to answer
            try:
                self.core.ack(socket.id, event.ack_id, *answer)
            except (ValueError, TypeError) as exc:  # SocketIOEncodeError: NaN, too deep, ...
                logger.error("ack of %r cannot be encoded: %s", name, exc)
        elif ack is not None and result is not None:
            logger.warning("handler of %r takes ack=: its return value %r is not sent", name, result)

    def _ack_for(self, socket: Socket, ack_id: int | None) -> Ack:
        if ack_id is None:
            return Ack(None)
        core, sid = self.core, socket.id

        def send(args: tuple[Any, ...]) -> None:
            core.ack(sid, ack_id, *args)

        return Ack(send)

    async def _handler_failed(self, socket: Socket, event: str, exc: Exception) -> None:
        """A handler raised: the ``on_error`` hook sees it, or it is logged."""
        hook = self._on_error
        if hook is None:
            logger.error("Socket.IO handler %r of %s failed", event, socket.namespace, exc_info=exc)
            return
        try:
            await _maybe_await(hook(socket, event, exc))
        except Exception:  # noqa: BLE001
            logger.exception("on_error hook failed (handling %r of %s: %r)", event, socket.namespace, exc)

    async def _run_connect(self, connection: _Connection, request: _core.ConnectRequested) -> None:
        core = self.core
        nsp = await self._resolve_namespace(request.namespace, request.auth)
        if nsp is None:
            core.refuse_connect(request.eio_sid, request.namespace, _core.ConnectRefused(INVALID_NAMESPACE))
            return
        socket = Socket(self, nsp, request.sid, connection, request.auth, request.recovered, request.recovery_refused)
        self._sockets[socket.id] = socket
        refusal: _core.ConnectRefused | None = None
        recovery = self.core.config.recovery
        skip_middlewares = request.recovered and recovery is not None and recovery.skip_middlewares
        try:
            for middleware in [] if skip_middlewares else list(nsp._middlewares):
                await _maybe_await(middleware(socket, request.auth))
            handler = nsp._handlers.get("connect")
            if handler is not None and await _maybe_await(handler(socket, request.auth)) is False:
                raise ConnectionRefusedError()
        except ConnectionRefusedError as exc:
            refusal = _core.ConnectRefused(exc.message, exc.data)
        except builtins.ConnectionRefusedError:
            # The OSError of that name (python-socketio accepts it too): its text may
            # describe the server's own network, so it is not sent.
            refusal = _core.ConnectRefused("Connection refused by server")
        except Exception as exc:  # noqa: BLE001 - a buggy connect handler refuses, it does not crash
            refusal = _core.ConnectRefused("Internal server error")
            await self._handler_failed(socket, "connect", exc)
        if refusal is not None:
            self._sockets.pop(socket.id, None)
            core.refuse_connect(request.eio_sid, request.namespace, refusal)
        elif core.accept_connect(request.eio_sid, request.namespace) is None:
            self._sockets.pop(socket.id, None)  # the connection went away meanwhile
        else:
            socket.connected = True
            nsp.sockets[socket.id] = socket
            connection.sockets[nsp.name] = socket
            if self._observer is not None:
                self._observer.socket_connected(socket)
        self._route_events_nowait()

    # ------------------------------------------------------------------ namespaces

    def _resolve_namespace_config(self, name: str) -> _core.NamespaceConfig | None:
        return _DEFERRED if name in self._namespaces or self._parents else None

    async def _resolve_namespace(self, name: str, auth: Any) -> Namespace | None:
        nsp = self._namespaces.get(name)
        if nsp is not None:
            return nsp
        for parent in list(self._parents):
            try:
                matched = await parent._matches(name, auth)
            except Exception:  # noqa: BLE001
                logger.exception("namespace predicate %s failed", parent.name)
                matched = False
            if matched:
                nsp = self._namespaces.get(name)  # another connection may have created it meanwhile
                if nsp is None:
                    nsp = self._namespaces[name] = Namespace(self, name, parent=parent)
                    parent.children[name] = nsp
                    if self._cluster is not None:
                        self._cluster.ensure_namespace(name)
                return nsp
        return None

    def _namespace_for(self, namespace: str | None, to: Rooms) -> Namespace:
        if namespace is None:
            if isinstance(to, str):
                socket = self._sockets.get(to)
                if socket is not None:
                    return socket.nsp
            namespace = "/"
        nsp = self._namespaces.get(namespace)
        if nsp is None:
            for parent in self._parents:
                if parent.name == namespace:
                    return parent
            raise ValueError(f"unknown namespace {namespace!r}")
        return nsp


class _AddFrontDoor:
    """A task status that also hands the started ``WebSocketServer`` to a collector."""

    def __init__(self, task_status: trio.TaskStatus[Any], collector: Any) -> None:
        self._task_status = task_status
        self._collector = collector

    def started(self, value: Any = None) -> None:
        self._collector.add(value)
        self._task_status.started(value)


class _HandlerFailed(Exception):
    """Internal: a handler raised (already logged)."""

