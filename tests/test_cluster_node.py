"""A volleyio server and a Node socket.io server in one cluster on a real redis-server,
through the Redis Streams adapter (``@socket.io/redis-streams-adapter`` on the Node side)
and through sharded pub/sub (``@socket.io/redis-adapter``'s ``createShardedAdapter``):
broadcasts, server-side emits with acks, fetch_sockets, socketsJoin/Leave,
disconnectSockets and broadcasts with acks, both ways."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _cluster_peers import NodePeer
from _redis_support import RedisProcess, redis_server  # noqa: F401
from test_cluster_redis import Client, build

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("kind", ["streams", "sharded"])
async def test_volleyio_and_node_share_a_cluster(kind: str, redis_server: RedisProcess) -> None:
    if kind == "streams":
        adapter: vt.ClusterAdapter = vt.RedisStreamsAdapter(redis_server.url)
    else:
        adapter = vt.ShardedRedisAdapter(redis_server.url)
    peer = NodePeer(redis_server.url, kind, name="node")
    async with trio.open_nursery() as nursery:
        await peer.start()
        try:
            py = build(adapter, "py")
            server = await nursery.start(py.serve, "127.0.0.1", 0)
            with trio.fail_after(10):
                while await py.server_count() < 2 or await peer.call("serverCount") < 2:
                    await trio.sleep(0.05)
            async with Client(server.port) as pa, Client(peer.port) as na, Client(peer.port) as nb:
                for client in (pa, na):
                    await client.client.call("join", "room")
                await trio.sleep(0.3)
                # Python → Node clients, in order, once
                for i in range(10):
                    await py.emit("from-py", i, to="room")
                await pa.wait_for(10)
                await na.wait_for(10)
                assert [v for _, v in na.received] == list(range(10))
                assert nb.received == []
                # Node → Python clients, in order, once (and binary both ways)
                await peer.call("emitMany", to="room", event="from-node", sender="n", count=10)
                await pa.wait_for(20)
                assert [v for _, v in pa.received[10:]] == [["n", i] for i in range(10)]
                await peer.call("emit", event="bin", args=[{"$bin": "AAEC"}], to="room")
                await pa.wait_for(21)
                assert pa.received[20] == ("bin", b"\x00\x01\x02")
                await py.emit("pybin", b"\xff\x00", to="room")
                await na.wait_for(22)
                assert ("pybin", b"\xff\x00") in na.received
                # local-only stays here
                await py.emit("local-only", 1, local=True)
                await pa.wait_for(23)
                await trio.sleep(0.3)
                assert not any(e == "local-only" for e, _ in na.received)

                # server-side emits with acks, both ways
                assert await py.server_side_emit_with_ack("hello", 7) == ["node:7"]
                assert await peer.call("serverSideEmitWithAck", event="hello", args=[8]) == ["py:8"]

                # fetch_sockets, both ways, with rooms and data
                sockets = {s.id: s for s in await py.fetch_sockets()}
                assert set(sockets) == {pa.sid, na.sid, nb.sid}
                assert sockets[na.sid].rooms == {na.sid, "room"} and sockets[na.sid].data == {"server": "node"}
                from_node = {s["id"]: s for s in await peer.call("fetchSockets")}
                assert set(from_node) == {pa.sid, na.sid, nb.sid}
                assert from_node[pa.sid]["rooms"] == sorted([pa.sid, "room"])
                assert from_node[pa.sid]["data"] == {"server": "py"}
                assert len(await peer.call("fetchSockets", to="room")) == 2

                # socketsJoin / socketsLeave, both ways
                await py.sockets_join("vip", to=nb.sid)
                with trio.fail_after(5):
                    while "vip" not in (await peer.call("rooms", sid=nb.sid) or []):
                        await trio.sleep(0.05)
                await peer.call("socketsJoin", to=pa.sid, rooms=["club"])
                with trio.fail_after(5):
                    while "club" not in py.rooms(pa.sid):
                        await trio.sleep(0.05)
                await peer.call("socketsLeave", to="club", rooms=["club"])
                with trio.fail_after(5):
                    while "club" in py.rooms(pa.sid):
                        await trio.sleep(0.05)

                # broadcast acks gathered from the clients of both servers, both ways
                answers = await py.gather("q", 1, to="room", timeout=5)
                assert sorted(answers.values()) == sorted([f"ack:{pa.sid}", f"ack:{na.sid}"])
                assert answers[pa.sid] == f"ack:{pa.sid}"
                node_answers = await peer.call("gather", event="q", args=[2], to="room")
                assert sorted(node_answers) == sorted([f"ack:{pa.sid}", f"ack:{na.sid}"])

                # disconnectSockets, both ways
                await py.disconnect_sockets(to=nb.sid)
                with trio.fail_after(5):
                    while len(await peer.call("fetchSockets")) != 2:
                        await trio.sleep(0.05)
                await peer.call("disconnectSockets", to=pa.sid)
                with trio.fail_after(5):
                    while py.get_socket(pa.sid) is not None:
                        await trio.sleep(0.05)
                assert {s.id for s in await py.fetch_sockets()} == {na.sid}
        finally:
            await peer.stop()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", ["streams", "sharded"])
async def test_server_side_emit_without_ack_reaches_node(kind: str, redis_server: RedisProcess) -> None:
    adapter: vt.ClusterAdapter = (
        vt.RedisStreamsAdapter(redis_server.url) if kind == "streams" else vt.ShardedRedisAdapter(redis_server.url)
    )
    peer = NodePeer(redis_server.url, kind)
    received: list[Any] = []
    async with trio.open_nursery() as nursery:
        await peer.start()
        try:
            py = build(adapter, "py")
            py.on_server_side_emit("note", lambda *args: received.append(list(args)))
            await nursery.start(py.serve, "127.0.0.1", 0)
            with trio.fail_after(10):
                while await py.server_count() < 2:
                    await trio.sleep(0.05)
            await py.server_side_emit("note", 1, {"a": [2]})
            await peer.call("serverSideEmit", event="note", args=["x", {"$bin": "AQ=="}])
            with trio.fail_after(5):
                while not received or not await peer.call("serverSideLog"):
                    await trio.sleep(0.05)
            assert await peer.call("serverSideLog") == [[1, {"a": [2]}]]
            assert received == [["x", b"\x01"]]
        finally:
            await peer.stop()
            nursery.cancel_scope.cancel()
