"""Cluster adapters on trio: the transport-independent part.

:class:`ClusterAdapter` joins a :class:`~volleyio.trio.SocketIOServer` to a cluster (other
volleyio processes and Node ``socket.io`` servers) through a broker. It owns the
sans-I/O :class:`volleyio.socketio.cluster.ClusterCore`, a bounded publication queue,
the timers (request deadlines, heartbeats, dead nodes) and the reconnection loop with
exponential backoff; a subclass (``RedisStreamsAdapter``, ``ShardedRedisAdapter``)
provides the broker session: how to connect, publish a batch, and read.

Delivery while the broker is away (documented behaviour): local delivery never stops.
Messages to publish wait in the queue (``max_queue`` messages, default 1,000) and are
published in order once the adapter has reconnected; a volatile broadcast that finds
the queue full is dropped (counted in ``statistics()["dropped_volatile"]``), any other
publication that finds it full while the broker is unreachable raises
:class:`ClusterUnavailableError` to the caller (after the local delivery), and while the
broker is reachable but slow it waits for room (backpressure). Requests that need
answers (``fetch_sockets``, ``server_side_emit_with_ack``, cluster ``gather``) end with
:class:`~volleyio.socketio.cluster.ClusterRequestTimeout` when not every node answered
in time.
"""

from __future__ import annotations

import abc
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio

from ..errors import VolleyError
from ..metrics import ClusterMetrics
from ..socketio.adapter import BroadcastOptions, InMemoryAdapter
from ..socketio.cluster import (
    BroadcastAckProgress,
    ClusterCore,
    ClusterDecodeError,
    ClusterEvent,
    ClusterMessage,
    ClusterRequestTimeout,
    HeartbeatRequested,
    NodeJoined,
    NodeLeft,
    RemoteBroadcast,
    RemoteDisconnectSockets,
    RemoteFetchSockets,
    RemoteServerSideEmit,
    RemoteSocketsJoin,
    RemoteSocketsLeave,
    RequestDone,
)
from ..socketio.packets import PacketType, _encode
from ._errors import BaseExceptionGroup

if TYPE_CHECKING:
    from ._socketio_server import SocketIOServer

__all__ = [
    "ClusterAdapter",
    "ClusterConnectError",
    "ClusterRooms",
    "ClusterUnavailableError",
]

logger = logging.getLogger("volleyio.trio.cluster")


_BROKER_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    EOFError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)
try:  # the broker clients (coredis) run on anyio: its stream errors too
    import anyio

    _BROKER_FAILURES += (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)
except ImportError:  # pragma: no cover
    pass


class ClusterConnectError(VolleyError):
    """The broker could not be reached when the server started."""


class ClusterUnavailableError(VolleyError):
    """The broker is unreachable and the publication queue is full: the message was
    delivered locally only."""


class ClusterRooms(InMemoryAdapter):
    """The in-memory rooms of a clustered server, reporting rooms that appear and
    disappear (the sharded adapter subscribes to one channel per room)."""

    def __init__(self, on_change: Callable[[str, str, bool], None] | None = None) -> None:
        super().__init__()
        self.on_change = on_change

    def join(self, namespace: str, sid: str, room: str) -> None:
        created = room not in self._rooms.get(namespace, {})
        super().join(namespace, sid, room)
        if created and self.on_change is not None:
            self.on_change(namespace, room, True)

    def leave(self, namespace: str, sid: str, room: str) -> None:
        existed = room in self._rooms.get(namespace, {})
        super().leave(namespace, sid, room)
        if existed and room not in self._rooms.get(namespace, {}) and self.on_change is not None:
            self.on_change(namespace, room, False)


def _first(args: list[Any] | None) -> Any:
    return args[0] if args else None


class ClusterAdapter(abc.ABC):
    """Base of the trio cluster adapters (pass one as ``SocketIOServer(adapter=...)``).

    Options: ``heartbeat_interval`` / ``heartbeat_timeout`` (seconds, Node's 5 / 10),
    ``request_timeout`` (default for cluster requests, Node's 5 s), ``max_queue``
    (messages waiting for publication), ``reconnect_delay`` / ``max_reconnect_delay``
    (exponential backoff, seconds), ``uid`` (this node's id; random by default).

    ``connected`` tells whether the broker session is up; ``core`` is the sans-I/O
    :class:`~volleyio.socketio.cluster.ClusterCore` (``core.nodes(namespace)``: the other
    servers seen alive); ``rooms`` the local room membership handed to the Socket.IO core.
    """

    def __init__(
        self,
        *,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 10.0,
        request_timeout: float = 5.0,
        max_queue: int = 1000,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        uid: str | None = None,
    ) -> None:
        self.core = ClusterCore(
            uid,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            request_timeout=request_timeout,
        )
        self.rooms = ClusterRooms(self._room_changed)
        self.max_queue = max(1, max_queue)
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.connected = False
        self._server: SocketIOServer | None = None
        self._current_session: Any = None  # the broker session while connected
        self._nursery: trio.Nursery | None = None
        self._queue: deque[tuple[ClusterMessage, str | None]] = deque()
        self._queue_lot = trio.lowlevel.ParkingLot()  # the publisher waits for messages
        self._room_lot = trio.lowlevel.ParkingLot()  # publishers wait for room in the queue
        self._timer_changed = trio.Event()
        self._waiters: dict[str, tuple[trio.Event, list[RequestDone]]] = {}
        self._progress: dict[str, Callable[[BroadcastAckProgress], None]] = {}
        self._new_namespaces: list[str] = []
        self._namespace_lot = trio.lowlevel.ParkingLot()
        #: Read by :class:`volleyio.metrics.VolleyioCollector` at scrape time.
        self.cluster_metrics = ClusterMetrics()
        self._stats = {
            "published": 0,
            "received": 0,
            "dropped_volatile": 0,
            "undecodable": 0,
            "unencodable": 0,
            "reconnects": 0,
        }

    @property
    def uid(self) -> str:
        return self.core.uid

    # ------------------------------------------------------------ transport hooks

    @abc.abstractmethod
    def _session(self) -> Any:
        """An async context manager: connected to the broker (raises when it cannot)."""

    @abc.abstractmethod
    async def _publish_batch(self, session: Any, batch: list[tuple[ClusterMessage, str | None]]) -> None:
        """Publish messages in order (``(message, requester uid)`` for responses)."""

    @abc.abstractmethod
    async def _read(self, session: Any, deliver: Callable[[ClusterMessage, str], None]) -> None:
        """Read the broker until the session fails; ``deliver(message, offset)``."""

    @abc.abstractmethod
    async def _subscribe_namespace(self, session: Any, namespace: str) -> None:
        """Start receiving ``namespace``'s messages (its channels)."""

    @abc.abstractmethod
    async def _server_count(self, session: Any, namespace: str) -> int:
        """How many servers take part in ``namespace`` (this one included)."""

    def _room_changed(self, namespace: str, room: str, created: bool) -> None:
        """A local room appeared or disappeared (the sharded adapter subscribes)."""

    def _is_broker_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, _BROKER_FAILURES)

    # ------------------------------------------------------------ running

    def ensure_namespace(self, namespace: str) -> None:
        """Take part in ``namespace`` (the server calls this for each of its namespaces)."""
        if namespace in self.core.namespaces or namespace in self._new_namespaces:
            return
        self._new_namespaces.append(namespace)
        self._namespace_lot.unpark_all()

    async def run(self, server: SocketIOServer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect (raising :class:`ClusterConnectError` if the broker cannot be reached),
        then serve until cancelled, reconnecting with backoff."""
        if self._server is not None:
            raise RuntimeError("this cluster adapter is already running")
        self._server = server
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timer_loop)
                await self._connection_loop(task_status)
        finally:
            self._nursery = None
            self._server = None
            self.connected = False
            for event, _ in self._waiters.values():
                event.set()

    async def _connection_loop(self, task_status: trio.TaskStatus[None]) -> None:
        started = False
        delay = self.reconnect_delay
        while True:
            try:
                session_cm = self._session()
                async with session_cm as session:
                    self._current_session = session
                    namespaces = sorted(self.core.namespaces | set(self._new_namespaces))
                    for namespace in namespaces:
                        await self._subscribe_namespace(session, namespace)
                    self.connected = True
                    delay = self.reconnect_delay
                    if not started:
                        started = True
                        task_status.started()
                    else:
                        self._stats["reconnects"] += 1
                        logger.warning("cluster adapter %s: reconnected to the broker", self.uid)
                    for namespace in namespaces:
                        self._add_namespace_now(namespace)
                    try:
                        async with trio.open_nursery() as inner:
                            inner.start_soon(self._publisher, session)
                            inner.start_soon(self._read, session, self._deliver)
                            inner.start_soon(self._namespace_watcher, session)
                            await trio.sleep_forever()
                    finally:
                        self.connected = False
                        self._current_session = None
                        self._room_lot.unpark_all()
            except BaseException as exc:  # noqa: BLE001 - sorted below
                # Cancelled (the server stops) wins over what the client library raises
                # while its connections are torn down.
                cancelled: BaseException | None
                rest: BaseException | None
                if isinstance(exc, BaseExceptionGroup):
                    cancelled, rest = exc.split(trio.Cancelled)
                else:
                    cancelled, rest = (exc, None) if isinstance(exc, trio.Cancelled) else (None, exc)
                if rest is not None and not self._broker_failure(rest):
                    raise
                if cancelled is not None:
                    raise cancelled from None
                if not started:
                    raise ClusterConnectError(f"cannot reach the cluster broker: {_describe(exc)}") from None
                logger.warning("cluster adapter %s: broker connection lost (%s); retry in %.2fs", self.uid, _describe(exc), delay)
            await trio.sleep(delay)
            delay = min(delay * 2, self.max_reconnect_delay)

    def _broker_failure(self, exc: BaseException) -> bool:
        if isinstance(exc, BaseExceptionGroup):
            return all(self._broker_failure(inner) for inner in exc.exceptions)
        return self._is_broker_failure(exc)

    def _add_namespace_now(self, namespace: str) -> None:
        if namespace in self._new_namespaces:
            self._new_namespaces.remove(namespace)
        first = namespace not in self.core.namespaces
        hello = self.core.add_namespace(namespace, trio.current_time())
        if first:
            self._enqueue(hello, None)
        self._timer_changed.set()

    async def _namespace_watcher(self, session: Any) -> None:
        while True:
            while self._new_namespaces:
                namespace = self._new_namespaces[0]
                await self._subscribe_namespace(session, namespace)
                self._add_namespace_now(namespace)
            await self._namespace_lot.park()

    async def _publisher(self, session: Any) -> None:
        while True:
            if not self._queue:
                await self._queue_lot.park()
                continue
            batch = list(self._queue)
            started = trio.current_time()
            await self._publish_batch(session, batch)
            now = trio.current_time()
            self.cluster_metrics.observe_publish_lag(now - started)
            self.cluster_metrics.published(len(batch))
            for _ in batch:
                message, _ = self._queue.popleft()
                self.core.published(message.nsp, now)
            self._stats["published"] += len(batch)
            self._room_lot.unpark_all()

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.next_deadline()
            self._timer_changed = trio.Event()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._timer_changed.wait()
            events, heartbeats = self.core.handle_timers(trio.current_time())
            self.cluster_metrics.set_nodes(len(self.core.nodes()) + 1)
            for heartbeat in heartbeats:
                if self.connected:
                    self._enqueue(heartbeat, None)
            self._apply_all(events)

    # ------------------------------------------------------------ publishing

    def _enqueue(self, message: ClusterMessage, requester: str | None) -> bool:
        """Queue without waiting; False when the queue is full."""
        if len(self._queue) >= self.max_queue:
            return False
        self._queue.append((message, requester))
        self._queue_lot.unpark()
        return True

    async def publish(self, message: ClusterMessage, *, volatile: bool = False) -> None:
        """Queue ``message`` for publication (see the module documentation for what
        happens when the queue is full)."""
        if self._enqueue(message, None):
            return
        if volatile:
            self._stats["dropped_volatile"] += 1
            return
        while len(self._queue) >= self.max_queue:
            if not self.connected:
                raise ClusterUnavailableError(
                    f"cluster broker unreachable and {len(self._queue)} messages already wait: delivered locally only"
                )
            await self._room_lot.park()
        self._enqueue(message, None)

    async def close(self, timeout: float = 2.0) -> None:
        """Leave the cluster gracefully before stopping the server: publishes
        ADAPTER_CLOSE for every namespace (the other volleyio servers stop counting on
        this one at once instead of after the heartbeat timeout) and waits, up to
        ``timeout`` seconds, until everything queued is published."""
        for message in self.core.close():
            self._enqueue(message, None)
        with trio.move_on_after(timeout):
            while self._queue and self.connected:
                await self._room_lot.park()

    def _respond(self, message: ClusterMessage, requester: str) -> None:
        if not self._enqueue(message, requester):
            logger.warning("cluster adapter %s: publication queue full, response to %s dropped", self.uid, requester)

    def statistics(self) -> dict[str, int]:
        return {**self._stats, "queued": len(self._queue), "pending_requests": len(self._waiters)}

    # ------------------------------------------------------------ requests

    async def _expected(self, namespace: str) -> int:
        """How many other servers answer a request on ``namespace``."""
        return max(0, await self.server_count(namespace) - 1)

    async def server_count(self, namespace: str = "/") -> int:
        """Servers taking part in ``namespace``, this one included (asks the broker)."""
        session = self._current_session
        if session is None or not self.connected:
            return 1 + len(self.core.nodes(namespace))
        try:
            return await self._server_count(session, namespace)
        except Exception as exc:  # noqa: BLE001 - the broker's view is a best effort
            if not self._broker_failure(exc):
                raise
            return 1 + len(self.core.nodes(namespace))

    async def _request(
        self,
        register: Callable[[int, float], tuple[str, ClusterMessage]],
        namespace: str,
        what: str,
        progress: Callable[[BroadcastAckProgress], None] | None = None,
    ) -> RequestDone:
        expected = await self._expected(namespace)
        request_id, message = register(expected, trio.current_time())
        event = trio.Event()
        slot: list[RequestDone] = []
        self._waiters[request_id] = (event, slot)
        if progress is not None:
            self._progress[request_id] = progress
        try:
            done = self.core.check(request_id)
            if done is not None:
                return done
            self._timer_changed.set()
            await self.publish(message)
            await event.wait()
            if not slot:
                raise ClusterRequestTimeout(f"cluster {what}: the adapter stopped", [], expected)
            return slot[0]
        finally:
            self._waiters.pop(request_id, None)
            self._progress.pop(request_id, None)
            self.core.cancel(request_id)

    # ------------------------------------------------------------ incoming

    def _deliver(self, message: ClusterMessage, offset: str) -> None:
        self._stats["received"] += 1
        self.cluster_metrics.received()
        try:
            events = self.core.receive(message, trio.current_time(), offset)
        except ClusterDecodeError as exc:
            self._stats["undecodable"] += 1
            logger.warning("cluster adapter %s: message from %s dropped: %s", self.uid, message.uid, exc)
            return
        if events:
            self._timer_changed.set()
            self._apply_all(events)

    def _encode_failed(self, message: ClusterMessage, exc: Exception) -> None:
        self._stats["unencodable"] += 1
        logger.error("cluster adapter %s: %s message cannot be encoded, not published: %s", self.uid, message.type.name, exc)

    def _decode_failed(self, exc: Exception) -> None:
        self._stats["undecodable"] += 1
        logger.warning("cluster adapter %s: undecodable message dropped: %s", self.uid, exc)

    def _apply_all(self, events: Iterable[ClusterEvent]) -> None:
        server = self._server
        if server is None:
            return
        for event in events:
            try:
                self._apply(server, event)
            except Exception:  # noqa: BLE001 - one bad message never stops the node
                logger.exception("cluster adapter %s: cannot apply %r", self.uid, event)
        server._route_events_nowait()
        server._flush()

    def _apply(self, server: SocketIOServer, event: ClusterEvent) -> None:
        core = server.core
        cls = event.__class__
        if cls is RemoteBroadcast:
            assert isinstance(event, RemoteBroadcast)
            if event.request_id is None:
                messages: list[Any] = _encode(PacketType.EVENT, event.namespace, event.data, None)
                if core.prepare is not None:
                    messages = [core.prepare(message) for message in messages]
                core.deliver_broadcast(messages, event.options)
            else:
                self._remote_broadcast_with_ack(server, event)
        elif cls is RemoteSocketsJoin or cls is RemoteSocketsLeave:
            assert isinstance(event, (RemoteSocketsJoin, RemoteSocketsLeave))
            act = core.join if cls is RemoteSocketsJoin else core.leave
            for sid in self.rooms.targets(event.options):
                for room in event.rooms:
                    act(sid, room)
        elif cls is RemoteDisconnectSockets:
            assert isinstance(event, RemoteDisconnectSockets)
            server._disconnect_targets(self.rooms.targets(event.options), event.close)
        elif cls is RemoteFetchSockets:
            assert isinstance(event, RemoteFetchSockets)
            sockets = server._describe_sockets(event.options)
            self._respond(self.core.fetch_sockets_response(event.namespace, event.request_id, sockets), event.sender)
        elif cls is RemoteServerSideEmit:
            assert isinstance(event, RemoteServerSideEmit)
            server._run_server_side_emit(event, self)
        elif cls is RequestDone:
            assert isinstance(event, RequestDone)
            waiter = self._waiters.get(event.request_id)
            if waiter is not None:
                waiter[1].append(event)
                waiter[0].set()
        elif cls is BroadcastAckProgress:
            assert isinstance(event, BroadcastAckProgress)
            callback = self._progress.get(event.request_id)
            if callback is not None:
                callback(event)
        elif cls is HeartbeatRequested:
            assert isinstance(event, HeartbeatRequested)
            self._enqueue(self.core.heartbeat(event.namespace), None)
        elif cls is NodeJoined:
            logger.info("cluster adapter %s: node %s joined %s", self.uid, event.uid, event.namespace)  # type: ignore[union-attr]
        elif cls is NodeLeft:
            assert isinstance(event, NodeLeft)
            logger.info("cluster adapter %s: node %s left %s (%s)", self.uid, event.uid, event.namespace, event.reason)

    def _remote_broadcast_with_ack(self, server: SocketIOServer, event: RemoteBroadcast) -> None:
        core = server.core
        request_id = event.request_id
        assert request_id is not None
        options = event.options
        name = event.data[0]
        ack_id, targets = core.broadcast_with_ack(
            event.namespace,
            name,
            *event.data[1:],
            rooms=tuple(options.rooms),
            except_rooms=tuple(options.except_rooms),
            volatile=options.volatile,
        )
        registered: list[Any] = []
        for sid in targets:
            socket = server._sockets.get(sid)
            if socket is None or not socket.connected:
                core.cancel_ack(sid, ack_id)
                continue

            def resolve(args: list[Any] | None, sid: str = sid) -> None:
                if args is not None:
                    self._respond(self.core.broadcast_ack(event.namespace, request_id, _first(args), sid), event.sender)

            socket._acks[ack_id] = resolve
            registered.append(socket)
        self._respond(self.core.broadcast_client_count(event.namespace, request_id, len(registered)), event.sender)
        if registered and self._nursery is not None:
            self._nursery.start_soon(self._forget_acks, server, registered, ack_id, self.core.request_timeout)

    @staticmethod
    async def _forget_acks(server: SocketIOServer, sockets: list[Any], ack_id: int, timeout: float) -> None:
        await trio.sleep(timeout)
        for socket in sockets:
            if socket._acks.pop(ack_id, None) is not None:
                server.core.cancel_ack(socket.id, ack_id)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{exc.__class__.__name__}: {exc}"


def broadcast_options(namespace: str, rooms: Iterable[str], except_rooms: Iterable[str], volatile: bool = False) -> BroadcastOptions:
    return BroadcastOptions(namespace, frozenset(rooms), frozenset(except_rooms), frozenset(), volatile)
