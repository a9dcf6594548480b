"""The cluster-wide operations of :class:`~volleyio.trio.SocketIOServer` (Node's
``io.serverSideEmit``, ``io.fetchSockets``, ``io.socketsJoin``/``socketsLeave``,
``io.disconnectSockets``, broadcasts with acks across servers).

They work on a server without a cluster adapter too (then only locally, as in Node).
With a :class:`~volleyio.trio.ClusterAdapter` (``RedisStreamsAdapter``,
``ShardedRedisAdapter``), they reach every server of the cluster, volleyio and Node
alike. ``local=True`` keeps an operation on this server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Union

import trio

from ..socketio.adapter import BroadcastOptions
from ..socketio.cluster import ClusterRequestTimeout, RemoteServerSideEmit, RequestDone

if TYPE_CHECKING:
    from ._cluster import ClusterAdapter
    from ._socketio_server import Namespace, SocketIOServer

__all__ = ["ClusterOperations", "RemoteSocket"]

logger = logging.getLogger("volleyio.trio.cluster")

Rooms = Union[str, Iterable[str], None]
ServerSideHandler = Callable[..., Any]


def _rooms(rooms: Rooms) -> tuple[str, ...]:
    if rooms is None:
        return ()
    if isinstance(rooms, str):
        return (rooms,)
    return tuple(rooms)


def _options(namespace: str, to: Rooms, skip: Rooms) -> BroadcastOptions:
    return BroadcastOptions(namespace, frozenset(_rooms(to)), frozenset(_rooms(skip)))


class RemoteSocket:
    """A socket of any server of the cluster, as :meth:`ClusterOperations.fetch_sockets`
    returns it (Node's ``RemoteSocket``): a snapshot of ``id``, ``rooms``, ``data`` and
    ``handshake`` (Node's handshake fields: headers, time, address, xdomain, secure,
    issued, url, query, auth), and operations that reach it wherever it is."""

    __slots__ = ("server", "namespace", "id", "rooms", "data", "handshake")

    def __init__(self, server: SocketIOServer, namespace: str, description: dict[str, Any]) -> None:
        self.server = server
        self.namespace = namespace
        self.id: str = str(description.get("id"))
        rooms = description.get("rooms") or []
        self.rooms: frozenset[str] = frozenset(room for room in rooms if isinstance(room, str))
        self.data: Any = description.get("data")
        handshake = description.get("handshake")
        self.handshake: dict[str, Any] = handshake if isinstance(handshake, dict) else {}

    async def emit(self, event: str, *args: Any) -> None:
        await self.server.emit(event, *args, to=self.id, namespace=self.namespace)

    async def join(self, rooms: str | Iterable[str]) -> None:
        await self.server.sockets_join(rooms, to=self.id, namespace=self.namespace)

    async def leave(self, rooms: str | Iterable[str]) -> None:
        await self.server.sockets_leave(rooms, to=self.id, namespace=self.namespace)

    async def disconnect(self, close: bool = False) -> None:
        await self.server.disconnect_sockets(to=self.id, namespace=self.namespace, close=close)

    def __repr__(self) -> str:
        return f"<RemoteSocket {self.id} {self.namespace} rooms={sorted(self.rooms)}>"


class ClusterOperations:
    """Mixed into :class:`~volleyio.trio.SocketIOServer`."""

    _cluster: ClusterAdapter | None

    # ------------------------------------------------------------ server-side events

    def on_server_side_emit(
        self, event: str, handler: ServerSideHandler | None = None, *, namespace: str = "/"
    ) -> Any:
        """Register ``handler(*args)`` for ``event`` sent by another server with
        :meth:`server_side_emit` (Node's ``io.on(event, ...)`` for ``serverSideEmit``). Its
        return value (may be a coroutine's) is the answer a ``server_side_emit_with_ack``
        caller receives from this server. Without ``handler``: a decorator."""

        def register(func: ServerSideHandler) -> ServerSideHandler:
            self._server_side_handlers()[(namespace, event)] = func
            return func

        if handler is not None:
            return register(handler)
        return register

    def _server_side_handlers(self) -> dict[tuple[str, str], ServerSideHandler]:
        handlers: dict[tuple[str, str], ServerSideHandler] | None = getattr(self, "_ss_handlers", None)
        if handlers is None:
            handlers = {}
            self._ss_handlers = handlers
        return handlers

    async def server_side_emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        """Send ``event`` to the other servers of the cluster (not to this one, as Node)."""
        cluster = self._cluster
        if cluster is not None:
            cluster.ensure_namespace(namespace)
            await cluster.publish(cluster.core.server_side_emit(namespace, [event, *args]))

    async def server_side_emit_with_ack(
        self, event: str, *args: Any, namespace: str = "/", timeout: float | None = None
    ) -> list[Any]:
        """Send ``event`` to the other servers and return one answer per server (Node's
        ``serverSideEmitWithAck``). Raises :class:`~volleyio.socketio.cluster.
        ClusterRequestTimeout` (with the answers that arrived) when a server did not
        answer within ``timeout`` seconds (the adapter's ``request_timeout``, 5 s)."""
        cluster = self._cluster
        if cluster is None:
            return []
        cluster.ensure_namespace(namespace)
        data = [event, *args]
        done = await cluster._request(
            lambda expected, now: cluster.core.server_side_emit_with_ack(namespace, data, expected, now, timeout),
            namespace,
            f"server_side_emit_with_ack({event!r})",
        )
        return _finished(done, f"server_side_emit_with_ack({event!r})")

    # ------------------------------------------------------------ sockets anywhere

    async def fetch_sockets(
        self,
        *,
        to: Rooms = None,
        skip: Rooms = None,
        namespace: str = "/",
        local: bool = False,
        timeout: float | None = None,
    ) -> list[RemoteSocket]:
        """The sockets of ``namespace`` (members of ``to``, minus those of ``skip``) on
        every server; raises ``ClusterRequestTimeout`` if a server did not answer."""
        options = _options(namespace, to, skip)
        server: SocketIOServer = self  # type: ignore[assignment]
        found = [RemoteSocket(server, namespace, d) for d in self._describe_sockets(options)]
        cluster = self._cluster
        if cluster is None or local:
            return found
        cluster.ensure_namespace(namespace)
        done = await cluster._request(
            lambda expected, now: cluster.core.fetch_sockets(namespace, options, expected, now, timeout),
            namespace,
            "fetch_sockets",
        )
        descriptions = _finished(done, "fetch_sockets")
        found.extend(RemoteSocket(server, namespace, d) for d in descriptions if isinstance(d, dict))
        return found

    async def count(self, *, to: Rooms = None, skip: Rooms = None, namespace: str = "/", local: bool = False) -> int:
        """How many sockets of ``namespace`` (in ``to``, minus ``skip``) the cluster has."""
        return len(await self.fetch_sockets(to=to, skip=skip, namespace=namespace, local=local))

    async def server_count(self, namespace: str = "/") -> int:
        """Servers of the cluster taking part in ``namespace`` (1 without a cluster)."""
        return 1 if self._cluster is None else await self._cluster.server_count(namespace)

    async def sockets_join(
        self, rooms: str | Iterable[str], *, to: Rooms = None, skip: Rooms = None, namespace: str = "/", local: bool = False
    ) -> None:
        """Make the matching sockets of every server join ``rooms`` (Node's ``socketsJoin``)."""
        await self._sockets_rooms(True, _rooms(rooms), _options(namespace, to, skip), local)

    async def sockets_leave(
        self, rooms: str | Iterable[str], *, to: Rooms = None, skip: Rooms = None, namespace: str = "/", local: bool = False
    ) -> None:
        """Make the matching sockets of every server leave ``rooms`` (Node's ``socketsLeave``)."""
        await self._sockets_rooms(False, _rooms(rooms), _options(namespace, to, skip), local)

    async def _sockets_rooms(self, join: bool, rooms: tuple[str, ...], options: BroadcastOptions, local: bool) -> None:
        server: SocketIOServer = self  # type: ignore[assignment]
        act = server.core.join if join else server.core.leave
        for sid in server.core.adapter.targets(options):
            for room in rooms:
                act(sid, room)
        cluster = self._cluster
        if cluster is not None and not local:
            cluster.ensure_namespace(options.namespace)
            build = cluster.core.sockets_join if join else cluster.core.sockets_leave
            await cluster.publish(build(options.namespace, options, rooms))

    async def disconnect_sockets(
        self, *, to: Rooms = None, skip: Rooms = None, namespace: str = "/", close: bool = False, local: bool = False
    ) -> None:
        """Disconnect the matching sockets of every server (Node's ``disconnectSockets``;
        ``close`` closes their whole connection)."""
        options = _options(namespace, to, skip)
        server: SocketIOServer = self  # type: ignore[assignment]
        self._disconnect_targets(server.core.adapter.targets(options), close)
        cluster = self._cluster
        if cluster is not None and not local:
            cluster.ensure_namespace(namespace)
            await cluster.publish(cluster.core.disconnect_sockets(namespace, options, close))

    # ------------------------------------------------------------ hooks of the server

    def _cluster_publish_nowait(
        self, namespace: str, data: list[Any], rooms: Sequence[str], except_rooms: Sequence[str], volatile: bool
    ) -> bool:
        """Queue a BROADCAST if the queue has room; False if it has not (then
        :meth:`_cluster_publish`)."""
        cluster = self._cluster
        if cluster is None:
            return True
        options = BroadcastOptions(namespace, frozenset(rooms), frozenset(except_rooms), frozenset(), volatile)
        return cluster._enqueue(cluster.core.broadcast(namespace, data, options), None)

    async def _cluster_publish(
        self, namespace: str, data: list[Any], rooms: Sequence[str], except_rooms: Sequence[str], volatile: bool
    ) -> None:
        cluster = self._cluster
        if cluster is None:
            return
        options = BroadcastOptions(namespace, frozenset(rooms), frozenset(except_rooms), frozenset(), volatile)
        await cluster.publish(cluster.core.broadcast(namespace, data, options), volatile=volatile)

    async def _cluster_gather(
        self,
        nsp: Namespace,
        event: str,
        args: Sequence[Any],
        to: Rooms,
        skip: Rooms,
        timeout: float,
        as_list: bool = False,
    ) -> dict[str, Any]:
        """``gather`` across the cluster: local answers by socket id, remote ones by socket
        id when the answering server says it (volleyio does), else ``"~0"``, ``"~1"``..."""
        cluster = self._cluster
        assert cluster is not None
        results: dict[str, Any] = {}
        remote: list[Any] = []

        async def local() -> None:
            results.update(
                await nsp.gather(event, *args, to=to, skip=skip, timeout=timeout, as_list=as_list, local=True)
            )

        async def others(name: str) -> None:
            cluster.ensure_namespace(name)
            options = _options(name, to, skip)
            data = [event, *args]
            done = await cluster._request(
                lambda expected, now: cluster.core.broadcast_with_ack(name, data, options, expected, now, timeout),
                name,
                "gather",
            )
            remote.extend(done.responses)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(local)
            for child in nsp._concrete():
                nursery.start_soon(others, child.name)
        anonymous = 0
        for sid, value in remote:
            if as_list:
                value = [value]  # the adapters' wire format carries the first argument only
            if sid is None or sid in results:
                results[f"~{anonymous}"] = value
                anonymous += 1
            else:
                results[sid] = value
        return results

    def _describe_sockets(self, options: BroadcastOptions) -> list[dict[str, Any]]:
        server: SocketIOServer = self  # type: ignore[assignment]
        out = []
        for sid in server.core.adapter.targets(options):
            socket = server._sockets.get(sid)
            if socket is None or not socket.connected or socket.namespace != options.namespace:
                continue
            handshake = socket.handshake
            out.append(
                {
                    "id": sid,
                    "handshake": {
                        "headers": handshake.headers,
                        "time": handshake.time,
                        "address": handshake.address,
                        "xdomain": handshake.xdomain,
                        "secure": handshake.secure,
                        "issued": int(handshake.issued),
                        "url": handshake.url,
                        "query": dict(handshake.query),
                        "auth": handshake.auth,
                    },
                    "rooms": sorted(socket.rooms),
                    "data": socket.data,
                }
            )
        return out

    def _disconnect_targets(self, sids: Iterable[str], close: bool) -> None:
        server: SocketIOServer = self  # type: ignore[assignment]
        for sid in list(sids):
            socket = server._sockets.get(sid)
            if socket is None:
                continue
            if close:
                connection = socket._connection
                for other in list(connection.sockets.values()):
                    server.core.disconnect(other.id)
                server.core.close_connection(connection.eio_sid, trio.current_time())
            else:
                server.core.disconnect(sid)
        server._route_events_nowait()
        server._flush()

    def _run_server_side_emit(self, event: RemoteServerSideEmit, cluster: ClusterAdapter) -> None:
        server: SocketIOServer = self  # type: ignore[assignment]
        name = event.data[0]
        handler = self._server_side_handlers().get((event.namespace, str(name)))
        if handler is None or server._nursery is None:
            return

        async def run() -> None:
            started = time.monotonic()
            try:
                result = handler(*event.data[1:])
                if hasattr(result, "__await__"):
                    result = await result
            except Exception:  # noqa: BLE001 - an application bug never stops the node
                logger.exception("server-side handler %r failed", name)
                return
            if event.request_id is not None:
                cluster._respond(
                    cluster.core.server_side_emit_response(event.namespace, event.request_id, result), event.sender
                )
            logger.debug("server-side %r handled in %.3fs", name, time.monotonic() - started)

        server._nursery.start_soon(run)


def _finished(done: RequestDone, what: str) -> list[Any]:
    if done.timed_out:
        raise ClusterRequestTimeout(
            f"cluster {what} timed out: {done.missing} server(s) did not answer", list(done.responses), done.missing
        )
    return list(done.responses)
