"""volleyio servers joined through a real redis-server (Redis Streams and sharded pub/sub
adapters): cluster-wide broadcasts, fetch_sockets, sockets_join/leave,
disconnect_sockets, server_side_emit with acks, gather; failure behaviour (Redis
unreachable at start-up, requests timing out, a Redis restart, the bounded queue)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _redis_support import RedisProcess, free_port, own_redis, redis_cluster, redis_server  # noqa: F401
from volleyio.socketio import ClusterRequestTimeout

pytestmark = pytest.mark.interop

Factory = Callable[[str], vt.ClusterAdapter]


def streams(url: str, **options: Any) -> vt.ClusterAdapter:
    return vt.RedisStreamsAdapter(url, **options)


def sharded(url: str, **options: Any) -> vt.ClusterAdapter:
    return vt.ShardedRedisAdapter(url, **options)


ADAPTERS = [pytest.param(streams, id="streams"), pytest.param(sharded, id="sharded")]


def build(adapter: vt.ClusterAdapter, name: str) -> vt.SocketIOServer:
    sio = vt.SocketIOServer(adapter=adapter)

    @sio.on("join")
    async def join(socket: vt.Socket, room: str) -> str:
        await socket.join(room)
        return socket.id

    @sio.on("whoami")
    def whoami(socket: vt.Socket) -> str:
        return socket.id

    @sio.on_server_side_emit("hello")
    def hello(value: int) -> str:
        return f"{name}:{value}"

    @sio.on("connect")
    def connect(socket: vt.Socket, auth: Any) -> None:
        socket.data["server"] = name

    return sio


@asynccontextmanager
async def cluster(nursery: trio.Nursery, factory: Factory, url: str, n: int = 2, **options: Any) -> AsyncIterator[list[tuple[vt.SocketIOServer, int]]]:
    nodes = []
    for index in range(n):
        sio = build(factory(url, heartbeat_interval=0.5, heartbeat_timeout=1.5, **options), f"node{index}")
        server = await nursery.start(sio.serve, "127.0.0.1", 0)
        nodes.append((sio, server.port))
    # every node sees the others subscribed before the test starts
    with trio.fail_after(10):
        while [await sio.server_count() for sio, _ in nodes] != [n] * n:
            await trio.sleep(0.05)
    yield nodes


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[str, Any]] = []
        self.got = trio.Event()
        self.client = vt.SocketIOClient(f"http://127.0.0.1:{port}/", transports=["websocket"])

        @self.client.on("*")
        def anything(event: str, *args: Any) -> Any:
            self.received.append((event, args[0] if len(args) == 1 else list(args)))
            self.got.set()
            return f"ack:{self.sid}"

        self.sid = ""

    async def __aenter__(self) -> Client:
        await self.client.__aenter__()
        self.sid = await self.client.call("whoami")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.__aexit__(*exc)

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(10):
            while len(self.received) < count:
                self.got = trio.Event()
                await self.got.wait()


@pytest.mark.parametrize("factory", ADAPTERS)
async def test_cluster_operations_across_two_servers(factory: Factory, redis_server: RedisProcess) -> None:
    async with trio.open_nursery() as nursery:
        async with cluster(nursery, factory, redis_server.url) as nodes:
            (a, port_a), (b, port_b) = nodes
            async with Client(port_a) as ca, Client(port_b) as cb, Client(port_b) as cb2:
                for client in (ca, cb):
                    await client.client.call("join", "room")
                await trio.sleep(0.2)  # sharded: the room channel subscription
                # room broadcast: every member on both servers, once and in order
                for i in range(20):
                    await a.emit("news", i, to="room")
                await ca.wait_for(20)
                await cb.wait_for(20)
                assert [v for _, v in ca.received] == list(range(20))
                assert [v for _, v in cb.received] == list(range(20))
                assert cb2.received == []
                # broadcast to everyone, minus a room, and local-only
                await b.emit("all", "x", skip="room")
                await b.emit("local", "y", local=True)
                await cb2.wait_for(2)
                assert cb2.received == [("all", "x"), ("local", "y")]
                # fetch_sockets: every socket of the cluster with rooms and data
                sockets = await a.fetch_sockets()
                assert sorted(s.id for s in sockets) == sorted([ca.sid, cb.sid, cb2.sid])
                by_id = {s.id: s for s in sockets}
                assert by_id[cb.sid].rooms == {cb.sid, "room"}
                assert by_id[cb.sid].data == {"server": "node1"}
                assert by_id[cb.sid].handshake["query"]["transport"] == "websocket"
                assert await a.count(to="room") == 2
                # sockets_join from a, for sockets held by b
                await a.sockets_join("vip", to=cb2.sid)
                await trio.sleep(0.3)
                assert "vip" in b.rooms(cb2.sid)
                await by_id[cb2.sid].emit("direct", 1)
                await cb2.wait_for(3)
                assert cb2.received[-1] == ("direct", 1)
                await a.sockets_leave("vip", to="vip")
                await trio.sleep(0.3)
                assert "vip" not in b.rooms(cb2.sid)
                # server_side_emit with acks: one answer per other server
                assert await a.server_side_emit_with_ack("hello", 7) == ["node1:7"]
                assert await b.server_side_emit_with_ack("hello", 8) == ["node0:8"]
                # gather across servers: every client of the room answers
                answers = await a.gather("q", 1, to="room", timeout=5)
                assert answers == {ca.sid: f"ack:{ca.sid}", cb.sid: f"ack:{cb.sid}"}
                # disconnect_sockets from a for a socket of b
                await a.disconnect_sockets(to=cb2.sid)
                with trio.fail_after(5):
                    while b.get_socket(cb2.sid) is not None:
                        await trio.sleep(0.05)
                assert await a.count() == 2
        nursery.cancel_scope.cancel()


async def test_unreachable_redis_is_a_clear_error() -> None:
    port = free_port()
    sio = vt.SocketIOServer(adapter=vt.RedisStreamsAdapter(f"redis://127.0.0.1:{port}", connect_timeout=1))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10), pytest.raises(vt.ClusterConnectError, match="cannot reach the cluster broker"):
            await nursery.start(sio.serve, "127.0.0.1", 0)


@pytest.mark.parametrize("factory", ADAPTERS)
async def test_request_to_a_silent_server_times_out(factory: Factory, redis_server: RedisProcess) -> None:
    import coredis

    async with trio.open_nursery() as nursery:
        async with cluster(nursery, factory, redis_server.url, n=1, request_timeout=0.5) as nodes:
            sio, _ = nodes[0]
            # a "server" that subscribes to the namespace channel but never answers
            async with coredis.Redis.from_url(redis_server.url) as client:
                channel = "socket.io#/#"
                if factory is sharded:
                    from volleyio.trio._redis import _standalone_sharded_pubsub
                    from coredis.retry import NoRetryPolicy

                    pubsub_cm = _standalone_sharded_pubsub(client, NoRetryPolicy())
                else:
                    pubsub_cm = client.pubsub()
                async with pubsub_cm as pubsub:
                    await pubsub.subscribe(channel)
                    assert await sio.server_count() == 2
                    with pytest.raises(ClusterRequestTimeout, match="1 server"):
                        await sio.fetch_sockets()
                    with pytest.raises(ClusterRequestTimeout) as info:
                        await sio.server_side_emit_with_ack("hello", 1)
                    assert info.value.responses == [] and info.value.missing == 1
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("factory", ADAPTERS)
async def test_redis_restart(factory: Factory, own_redis: RedisProcess) -> None:
    """Local delivery never stops; the adapter reconnects with backoff; broadcasts made
    while Redis was away wait in the bounded queue and are delivered after it."""
    async with trio.open_nursery() as nursery:
        async with cluster(nursery, factory, own_redis.url, max_reconnect_delay=0.5) as nodes:
            (a, port_a), (b, port_b) = nodes
            async with Client(port_a) as ca, Client(port_b) as cb:
                await a.emit("before", 0)
                await ca.wait_for(1)
                await cb.wait_for(1)
                own_redis.stop()
                with trio.fail_after(10):
                    while a._cluster is not None and a._cluster.connected:
                        await trio.sleep(0.05)
                await a.emit("during", 1)  # delivered locally at once, queued for the others
                await ca.wait_for(2)
                assert ca.received[-1] == ("during", 1)
                assert a._cluster is not None and a._cluster.statistics()["queued"] >= 1
                own_redis.start()
                with trio.fail_after(15):
                    while not (a._cluster.connected and b._cluster is not None and b._cluster.connected):
                        await trio.sleep(0.05)
                if factory is sharded:
                    await trio.sleep(0.3)  # b's subscriptions are back
                await cb.wait_for(2)
                assert cb.received[-1] == ("during", 1)
                await a.emit("after", 2)
                await cb.wait_for(3)
                assert [e for e, _ in cb.received] == ["before", "during", "after"]
                assert a._cluster.statistics()["reconnects"] >= 1
        nursery.cancel_scope.cancel()


async def test_full_queue_while_redis_is_away(own_redis: RedisProcess) -> None:
    async with trio.open_nursery() as nursery:
        async with cluster(nursery, streams, own_redis.url, n=1, max_queue=3, max_reconnect_delay=0.2) as nodes:
            sio, port = nodes[0]
            own_redis.stop()
            with trio.fail_after(10):
                while sio._cluster is not None and sio._cluster.connected:
                    await trio.sleep(0.05)
            async with Client(port) as client:
                for i in range(3):
                    await sio.emit("e", i)
                await sio.emit("v", 0, volatile=True)  # dropped, counted
                with pytest.raises(vt.ClusterUnavailableError):
                    await sio.emit("e", 3)
                await client.wait_for(5)  # local delivery went on for all of them
                assert sio._cluster is not None and sio._cluster.statistics()["dropped_volatile"] == 1
        nursery.cancel_scope.cancel()


async def test_sharded_on_a_redis_cluster(redis_cluster: list[RedisProcess]) -> None:
    url = redis_cluster[0].url

    def factory(url: str, **options: Any) -> vt.ClusterAdapter:
        return vt.ShardedRedisAdapter(url, cluster=True, **options)

    async with trio.open_nursery() as nursery:
        async with cluster(nursery, factory, url) as nodes:
            (a, port_a), (b, port_b) = nodes
            async with Client(port_a) as ca, Client(port_b) as cb:
                for client in (ca, cb):
                    await client.client.call("join", "room")
                await trio.sleep(0.3)
                for i in range(10):
                    await b.emit("news", i, to="room")
                await ca.wait_for(10)
                assert [v for _, v in ca.received] == list(range(10))
                assert sorted(s.id for s in await a.fetch_sockets()) == sorted([ca.sid, cb.sid])
                assert await b.server_side_emit_with_ack("hello", 3) == ["node0:3"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("factory", ADAPTERS)
async def test_graceful_close_and_heartbeat_view(factory: Factory, redis_server: RedisProcess) -> None:
    async with trio.open_nursery() as nursery:
        async with cluster(nursery, factory, redis_server.url, n=3) as nodes:
            (a, _), (b, _), (c, _) = nodes
            assert a._cluster is not None and b._cluster is not None and c._cluster is not None
            with trio.fail_after(5):
                while a._cluster.core.nodes("/") != {b._cluster.uid, c._cluster.uid}:
                    await trio.sleep(0.05)
            await c._cluster.close()
            with trio.fail_after(1):  # well within the 1.5 s heartbeat timeout: ADAPTER_CLOSE
                while c._cluster.uid in a._cluster.core.nodes("/"):
                    await trio.sleep(0.02)
            # b goes silent without a word (its tasks are stopped): gone after the timeout
            b._cluster.core.heartbeat_interval = 3600.0
            b._cluster._nursery.cancel_scope.cancel()  # type: ignore[union-attr]
            with trio.fail_after(5):
                while b._cluster.uid in a._cluster.core.nodes("/"):
                    await trio.sleep(0.05)
        nursery.cancel_scope.cancel()


async def test_slow_redis_applies_backpressure(own_redis: RedisProcess) -> None:
    """While Redis answers slowly (CLIENT PAUSE), the publication queue fills: further
    emits wait for room (after their local delivery), volatile ones are dropped; nothing
    grows past ``max_queue``."""
    import coredis

    async with trio.open_nursery() as nursery:
        async with cluster(nursery, streams, own_redis.url, n=2, max_queue=4) as nodes:
            (a, port_a), (b, port_b) = nodes
            assert a._cluster is not None
            async with Client(port_a) as ca, Client(port_b) as cb:
                async with coredis.Redis.from_url(own_redis.url) as admin:
                    await admin.client_pause(2000, mode=coredis.PureToken.WRITE)
                done: list[int] = []

                async def emitter() -> None:
                    for i in range(12):
                        await a.emit("e", i)
                        done.append(i)

                nursery.start_soon(emitter)
                await trio.sleep(0.8)
                assert a._cluster.statistics()["queued"] <= 4
                assert len(done) < 12  # waiting for room: backpressure
                await a.emit("v", 0, volatile=True)
                assert a._cluster.statistics()["dropped_volatile"] >= 1
                await ca.wait_for(len(done) + 1)  # local delivery did not wait
                await cb.wait_for(12)  # once Redis answers again, everything arrives, in order
                assert [v for e, v in cb.received if e == "e"] == list(range(12))
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("factory", ADAPTERS)
async def test_data_that_cannot_be_sent_does_not_stop_the_adapter(factory: Factory, redis_server: RedisProcess) -> None:
    from volleyio.socketio import SocketIOEncodeError

    async with trio.open_nursery() as nursery:
        async with cluster(nursery, factory, redis_server.url) as nodes:
            (a, _), (b, port_b) = nodes
            async with Client(port_b) as cb:
                with pytest.raises(SocketIOEncodeError):
                    await a.emit("bad", float("nan"))
                await a.emit("good", 1)
                await cb.wait_for(1)
                assert cb.received == [("good", 1)]
                assert a._cluster is not None and a._cluster.statistics()["unencodable"] == 1
        nursery.cancel_scope.cancel()


async def test_garbage_in_redis_is_dropped_and_counted(redis_server: RedisProcess) -> None:
    """Entries and messages the adapters cannot decode (written by something else) are
    dropped and counted; the node goes on."""
    import coredis

    async with trio.open_nursery() as nursery:
        async with cluster(nursery, streams, redis_server.url) as nodes:
            (a, _), (b, port_b) = nodes
            async with Client(port_b) as cb, coredis.Redis.from_url(redis_server.url) as raw:
                await raw.xadd("socket.io", {"uid": "x", "nsp": "/", "type": "3", "data": "{not json"})
                await raw.xadd("socket.io", {"uid": "x", "nsp": "/", "type": "3", "data": "@@@"})
                await raw.xadd("socket.io", {"uid": "x", "nsp": "/", "type": "3", "data": '{"packet":{"type":2,"data":[]}}'})
                await raw.publish("socket.io#/#", b"\xc1\xc1")
                await raw.publish("socket.io#/#", b"\x92\x01\x02")
                await a.emit("after", 1)
                await cb.wait_for(1)
                assert cb.received == [("after", 1)]
                assert b._cluster is not None
                with trio.fail_after(5):
                    while b._cluster.statistics()["undecodable"] < 5:
                        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()


async def test_streams_on_a_redis_cluster(redis_cluster: list[RedisProcess]) -> None:
    def factory(url: str, **options: Any) -> vt.ClusterAdapter:
        return vt.RedisStreamsAdapter(url, cluster=True, **options)

    async with trio.open_nursery() as nursery:
        async with cluster(nursery, factory, redis_cluster[0].url) as nodes:
            (a, port_a), (b, port_b) = nodes
            async with Client(port_a) as ca, Client(port_b) as cb:
                for i in range(10):
                    await b.emit("news", i)
                await ca.wait_for(10)
                assert [v for _, v in ca.received] == list(range(10))
                assert sorted(s.id for s in await a.fetch_sockets()) == sorted([ca.sid, cb.sid])
                assert await b.server_side_emit_with_ack("hello", 3) == ["node0:3"]
        nursery.cancel_scope.cancel()
