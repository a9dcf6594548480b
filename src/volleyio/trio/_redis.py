"""Redis transports for the cluster adapter, on ``coredis`` (needs ``volleyio[redis]``).

* :class:`RedisStreamsAdapter`: wire-compatible with ``@socket.io/redis-streams-adapter``
  (0.3): broadcasts, room joins/leaves and disconnections are appended to one stream
  (``XADD`` with approximate ``MAXLEN`` trimming) that every node reads (``XREAD``);
  requests, heartbeats and responses go over pub/sub (``PUBLISH`` to
  ``<prefix>#<nsp>#`` and to the requester's ``<prefix>#<nsp>#<uid>#``, msgpack). The
  number of servers is the number of subscribers of ``<prefix>#<nsp>#`` (``PUBSUB
  NUMSUB``), as Node counts. After a reconnection the adapter reads the stream on from
  the last entry it had read, so broadcasts made meanwhile by other nodes are not lost
  (as long as the stream still holds them, see ``max_len``).
* :class:`ShardedRedisAdapter`: wire-compatible with ``@socket.io/redis-adapter``'s
  ``createShardedAdapter`` (Redis 7 sharded pub/sub, ``SPUBLISH``/``SSUBSCRIBE``; JSON, or
  msgpack when binary is present), including its ``"dynamic"`` subscription mode: a
  broadcast to one public room goes to that room's channel ``<prefix>#<nsp>#<room>#``,
  which only the servers holding the room subscribe to. Works on a single Redis and
  on a Redis Cluster (``cluster=True``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio

from ..socketio.cluster import (
    ClusterDecodeError,
    ClusterMessage,
    MessageType,
    decode_msgpack,
    decode_sharded,
    decode_stream_entry,
    encode_msgpack,
    encode_sharded,
    encode_stream_entry,
)
from ._cluster import ClusterAdapter

__all__ = ["RedisStreamsAdapter", "ShardedRedisAdapter"]

ClientFactory = Callable[[], Any]


def _coredis() -> Any:
    try:
        import coredis
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ImportError("the Redis cluster adapters need coredis: pip install 'volleyio[redis]'") from exc
    return coredis


class _RedisAdapter(ClusterAdapter):
    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        cluster: bool = False,
        channel_prefix: str = "socket.io",
        connect_timeout: float = 5.0,
        client_factory: ClientFactory | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.url = url
        self.cluster = cluster
        self.channel_prefix = channel_prefix
        self.connect_timeout = connect_timeout
        self._client_factory = client_factory

    def _client(self) -> Any:
        """A new coredis client (an async context manager)."""
        if self._client_factory is not None:
            return self._client_factory()
        coredis = _coredis()
        from coredis.retry import NoRetryPolicy

        parts = urlsplit(self.url)
        common = {"connect_timeout": self.connect_timeout, "retry_policy": NoRetryPolicy()}
        if self.cluster:
            return coredis.RedisCluster(parts.hostname or "127.0.0.1", parts.port or 6379, **common)
        return coredis.Redis.from_url(self.url, **common)

    def _is_broker_failure(self, exc: BaseException) -> bool:
        _coredis()
        from coredis import exceptions

        return super()._is_broker_failure(exc) or isinstance(exc, exceptions.RedisError)

    def channel(self, namespace: str) -> str:
        return f"{self.channel_prefix}#{namespace}#"

    def private_channel(self, namespace: str, uid: str) -> str:
        return f"{self.channel_prefix}#{namespace}#{uid}#"

    def _no_retry(self) -> Any:
        from coredis.retry import NoRetryPolicy

        return NoRetryPolicy()


class _StreamsSession:
    def __init__(self, client: Any, reader: Any, pubsub: Any) -> None:
        self.client = client
        self.reader = reader
        self.pubsub = pubsub


class RedisStreamsAdapter(_RedisAdapter):
    """Cluster adapter over Redis Streams (see the module documentation).

    ``url``: ``redis://[user:password@]host:port[/db]`` (``rediss://`` for TLS);
    ``cluster=True`` for a Redis Cluster (then host and port of any node);
    ``stream_name`` (``"socket.io"``), ``max_len`` (approximate stream length, 10,000),
    ``read_count`` (entries per ``XREAD``, 100), ``block_time`` (seconds an ``XREAD``
    blocks, 5), ``channel_prefix`` (``"socket.io"``): Node's option names and defaults.
    Other options: :class:`~volleyio.trio.ClusterAdapter`.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        stream_name: str = "socket.io",
        max_len: int = 10_000,
        read_count: int = 100,
        block_time: float = 5.0,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        self.stream_name = stream_name
        self.max_len = max_len
        self.read_count = read_count
        self.block_time = block_time
        #: The id of the last stream entry read (reading resumes there after a reconnection).
        self.offset: str | None = None

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[_StreamsSession]:
        async with self._client() as client, self._client() as reader:
            await client.ping()
            async with client.pubsub(retry_policy=self._no_retry(), ignore_subscribe_messages=True) as pubsub:
                yield _StreamsSession(client, reader, pubsub)

    async def _subscribe_namespace(self, session: _StreamsSession, namespace: str) -> None:
        await session.pubsub.subscribe(self.channel(namespace), self.private_channel(namespace, self.uid))

    async def _server_count(self, session: _StreamsSession, namespace: str) -> int:
        channel = self.channel(namespace)
        counts = await session.client.pubsub_numsub(channel)
        return int(sum(counts.values())) if counts else 0

    async def _publish_batch(self, session: _StreamsSession, batch: list[tuple[ClusterMessage, str | None]]) -> None:
        client = session.client
        coredis = _coredis()
        for message, requester in batch:
            try:
                if requester is not None or self.core.is_ephemeral(message):
                    payload: Any = encode_msgpack(message)
                else:
                    payload = encode_stream_entry(message)
            except (ValueError, TypeError) as exc:
                self._encode_failed(message, exc)
                continue
            if requester is not None:
                await client.publish(self.private_channel(message.nsp, requester), payload)
            elif self.core.is_ephemeral(message):
                await client.publish(self.channel(message.nsp), payload)
            else:
                await client.xadd(
                    self.stream_name,
                    payload,
                    trim_strategy=coredis.PureToken.MAXLEN,
                    trim_operator=coredis.PureToken.APPROXIMATELY,
                    threshold=self.max_len,
                )

    async def _read(self, session: _StreamsSession, deliver: Callable[[ClusterMessage, str], None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_stream, session, deliver)
            nursery.start_soon(self._read_pubsub, session, deliver)

    async def _read_stream(self, session: _StreamsSession, deliver: Callable[[ClusterMessage, str], None]) -> None:
        if self.offset is None:
            # "$" as Node does, but pinned to a concrete id at once, so that a
            # reconnection goes on from here even if nothing was read yet.
            info = await session.reader.xrevrange(self.stream_name, count=1)
            self.offset = info[0].identifier.decode() if info else "0-0"
        key = self.stream_name.encode()
        block = max(1, round(self.block_time * 1000))
        while True:
            result = await session.reader.xread({self.stream_name: self.offset}, count=self.read_count, block=block)
            if not result:
                continue
            entries = result.get(key) or result.get(self.stream_name) or ()
            for entry in entries:
                identifier = entry.identifier
                self.offset = identifier.decode() if isinstance(identifier, bytes) else str(identifier)
                try:
                    message = decode_stream_entry(entry.field_values)
                except ClusterDecodeError as exc:
                    self._decode_failed(exc)
                    continue
                deliver(message, self.offset)

    async def _read_pubsub(self, session: _StreamsSession, deliver: Callable[[ClusterMessage, str], None]) -> None:
        pubsub = session.pubsub
        while True:
            item = await pubsub.get_message(ignore_subscribe_messages=True)
            if item is None or item.get("type") != "message":
                continue
            data = item["data"]
            try:
                message = decode_msgpack(data if isinstance(data, bytes) else str(data).encode())
            except ClusterDecodeError as exc:
                self._decode_failed(exc)
                continue
            deliver(message, "")


def _looks_like_a_socket_id(room: str) -> bool:
    return len(room) == 20  # Node's test (its ids, and ours, are 20 characters)


class _ShardedSession:
    def __init__(self, client: Any, pubsub: Any) -> None:
        self.client = client
        self.pubsub = pubsub


def _standalone_sharded_pubsub(client: Any, retry_policy: Any) -> Any:
    """coredis offers sharded pub/sub on ``RedisCluster`` only; on a single Redis 7 the same
    commands work: its ``PubSub`` with ``SSUBSCRIBE``/``SUNSUBSCRIBE`` instead."""
    import anyio
    from coredis.commands.constants import CommandName
    from coredis.patterns.pubsub import PubSub

    class StandaloneShardedPubSub(PubSub):  # type: ignore[type-arg]
        async def subscribe(self, *channels: Any, **handlers: Any) -> None:
            new = [self._encode(channel) for channel in channels]
            waiters = {channel: anyio.Event() for channel in new}
            for channel, event in waiters.items():
                self._subscription_waiters[channel].append(event)
            for channel in new:
                self._execute_command(CommandName.SSUBSCRIBE, channel)
            await self._ensure_subscribed(waiters)
            self.channels.update(dict.fromkeys(new))

        async def unsubscribe(self, *channels: Any) -> None:
            for channel in channels:
                self._execute_command(CommandName.SUNSUBSCRIBE, channel)
                self.channels.pop(self._encode(channel), None)

    return StandaloneShardedPubSub(client.connection_pool, retry_policy=retry_policy, ignore_subscribe_messages=True)


class ShardedRedisAdapter(_RedisAdapter):
    """Cluster adapter over Redis 7 sharded pub/sub (see the module documentation).

    ``url`` and ``cluster`` as :class:`RedisStreamsAdapter`; ``channel_prefix``
    (``"socket.io"``) and ``subscription_mode`` (``"dynamic"``, ``"dynamic-private"`` or
    ``"static"``): Node's option names and defaults.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        subscription_mode: str = "dynamic",
        **options: Any,
    ) -> None:
        if subscription_mode not in ("dynamic", "dynamic-private", "static"):
            raise ValueError("subscription_mode is 'dynamic', 'dynamic-private' or 'static'")
        super().__init__(url, **options)
        self.subscription_mode = subscription_mode
        self._room_channels: set[str] = set()  # subscribed room channels
        self._room_ops: list[tuple[str, bool]] = []
        self._room_lot = trio.lowlevel.ParkingLot()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[_ShardedSession]:
        async with self._client() as client:
            await client.ping()
            if self.cluster:
                pubsub_cm = client.sharded_pubsub(retry_policy=self._no_retry(), ignore_subscribe_messages=True)
            else:
                pubsub_cm = _standalone_sharded_pubsub(client, self._no_retry())
            async with pubsub_cm as pubsub:
                self._room_channels.clear()
                self._room_ops.clear()
                yield _ShardedSession(client, pubsub)

    def _room_channel(self, namespace: str, room: str) -> str:
        return f"{self.channel(namespace)}{room}#"

    def _public(self, namespace: str, room: str) -> bool:
        if self.subscription_mode == "static":
            return False
        if self.subscription_mode == "dynamic-private":
            return True
        server = self._server
        return server is None or server.core.socket_info(room) is None

    def _room_changed(self, namespace: str, room: str, created: bool) -> None:
        if self._current_session is None:
            return  # subscriptions are recomputed from the rooms at the next session
        channel = self._room_channel(namespace, room)
        if created and not self._public(namespace, room):
            return
        if not created and channel not in self._room_channels and (channel, True) not in self._room_ops:
            return
        self._room_ops.append((channel, created))
        self._room_lot.unpark_all()

    async def _subscribe_namespace(self, session: _ShardedSession, namespace: str) -> None:
        channels = [self.channel(namespace), self.private_channel(namespace, self.uid)]
        if self.subscription_mode != "static":
            for room in self.rooms.all_rooms(namespace):
                if self._public(namespace, room):
                    channels.append(self._room_channel(namespace, room))
        await session.pubsub.subscribe(*channels)
        self._room_channels.update(channels[2:])

    async def _server_count(self, session: _ShardedSession, namespace: str) -> int:
        counts = await session.client.pubsub_shardnumsub(self.channel(namespace))
        return int(sum(counts.values())) if counts else 0

    def _publish_channel(self, message: ClusterMessage, requester: str | None) -> str:
        if requester is not None:
            return self.private_channel(message.nsp, requester)
        data = message.data
        if message.type is MessageType.BROADCAST and data is not None and "requestId" not in data:
            rooms = (data.get("opts") or {}).get("rooms") or []
            if len(rooms) == 1 and (
                (self.subscription_mode == "dynamic" and not _looks_like_a_socket_id(rooms[0]))
                or self.subscription_mode == "dynamic-private"
            ):
                return self._room_channel(message.nsp, rooms[0])
        return self.channel(message.nsp)

    async def _publish_batch(self, session: _ShardedSession, batch: list[tuple[ClusterMessage, str | None]]) -> None:
        client = session.client
        for message, requester in batch:
            try:
                payload = encode_sharded(message)
            except (ValueError, TypeError) as exc:
                self._encode_failed(message, exc)
                continue
            await client.spublish(self._publish_channel(message, requester), payload)

    async def _read(self, session: _ShardedSession, deliver: Callable[[ClusterMessage, str], None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._apply_room_ops, session)
            pubsub = session.pubsub
            while True:
                item = await pubsub.get_message(ignore_subscribe_messages=True)
                if item is None or item.get("type") != "message":
                    continue
                data = item["data"]
                try:
                    message = decode_sharded(data if isinstance(data, bytes) else str(data).encode())
                except ClusterDecodeError as exc:
                    self._decode_failed(exc)
                    continue
                deliver(message, "")

    async def _apply_room_ops(self, session: _ShardedSession) -> None:
        while True:
            while self._room_ops:
                channel, subscribe = self._room_ops.pop(0)
                if subscribe and channel not in self._room_channels:
                    self._room_channels.add(channel)
                    await session.pubsub.subscribe(channel)
                elif not subscribe and channel in self._room_channels:
                    self._room_channels.discard(channel)
                    await session.pubsub.unsubscribe(channel)
            await self._room_lot.park()
