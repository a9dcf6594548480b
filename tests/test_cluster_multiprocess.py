"""The cluster as deployed: 3 volleyio server processes and 1 Node socket.io process on one
redis-server (Redis Streams adapters, then sharded pub/sub adapters), with official
socket.io-client and python-socketio clients spread over all four servers.

Checked: a room broadcast from every server reaches every member on every server exactly
once and in order per sender; server_side_emit with acks both ways between Python and
Node; fetch_sockets / sockets_join / disconnect_sockets across servers and languages;
broadcast acks gathered from the clients of every server; a Redis restart mid-run
(everyone gets what is broadcast after it, and what a volleyio server broadcast while
Redis was away); a volleyio server killed with SIGKILL disappears from the others' views
within the heartbeat timeout and requests keep working without it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import trio

from _cluster_peers import LinePeer, NodeClients, NodePeer, PythonPeer, PythonSocketIOClients, ServerPeer
from _redis_support import RedisProcess, own_redis  # noqa: F401

pytestmark = pytest.mark.interop

HEARTBEAT = {"heartbeat_interval": 0.5, "heartbeat_timeout": 2.0, "max_reconnect_delay": 0.5}
PER_SENDER = 20


class Member:
    def __init__(self, driver: LinePeer, index: int, sid: str, server: ServerPeer, kind: str) -> None:
        self.driver, self.index, self.sid, self.server, self.kind = driver, index, sid, server, kind

    async def received(self) -> list[list[Any]]:
        return await self.driver.call("received", index=self.index)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<{self.kind} client {self.sid} on :{self.server.port}>"


async def wait_until(predicate: Any, timeout: float = 15.0, what: str = "") -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.1)


async def events_of(member: Member, name: str) -> list[list[Any]]:
    return [e for e in await member.received() if e[0] == name]


@pytest.mark.parametrize("kind", ["streams", "sharded"])
async def test_three_volleyio_and_one_node_server(kind: str, own_redis: RedisProcess, speedups_impl: str) -> None:
    url = own_redis.url
    # the server processes run on the same speedups as the test
    pys = [PythonPeer(url, kind, f"py{i}", speedups_impl, **HEARTBEAT) for i in range(3)]
    node = NodePeer(url, kind, "node")
    servers: list[ServerPeer] = [*pys, node]
    node_clients, pys_clients = NodeClients(), PythonSocketIOClients()
    try:
        async with trio.open_nursery() as nursery:
            for peer in [*servers, node_clients, pys_clients]:
                nursery.start_soon(peer.start)
        for server in servers:
            await wait_until(lambda server=server: _count_is(server, 4), what="4 servers")

        # two clients per server: one socket.io-client (Node), one python-socketio
        members: list[Member] = []
        for server in servers:
            for driver, label in ((node_clients, "js"), (pys_clients, "pys")):
                info = await driver.call("connect", url=server.url)
                members.append(Member(driver, info["index"], info["sid"], server, label))
        for member in members:
            assert await member.driver.call("join", index=member.index, room="room") == member.sid
        await trio.sleep(0.5)  # sharded: room channel subscriptions

        # 1. every server broadcasts to the room; every member gets each message once, in order
        async with trio.open_nursery() as nursery:
            for i, server in enumerate(servers):
                nursery.start_soon(lambda s=server, i=i: s.call("emitMany", event="seq", sender=f"s{i}", count=PER_SENDER, to="room"))
        for member in members:
            await wait_until(lambda m=member: _has(m, "seq", PER_SENDER * len(servers)), what=f"seq at {member}")
        for member in members:
            per_sender: dict[str, list[int]] = defaultdict(list)
            for _, sender, i in await events_of(member, "seq"):
                per_sender[sender].append(i)
            assert set(per_sender) == {f"s{i}" for i in range(len(servers))}, member
            for sender, seq in per_sender.items():
                assert seq == list(range(PER_SENDER)), (member, sender, seq)

        # 2. server_side_emit with acks, Python -> all and Node -> all
        answers = await pys[0].call("serverSideEmitWithAck", event="hello", args=[1])
        assert sorted(answers) == ["node:1", "py1:1", "py2:1"]
        answers = await node.call("serverSideEmitWithAck", event="hello", args=[2])
        assert sorted(answers) == ["py0:2", "py1:2", "py2:2"]

        # 3. fetch_sockets from a volleyio server and from Node: all 8, with their data
        for server in (pys[1], node):
            found = {s["id"]: s for s in await server.call("fetchSockets")}
            assert set(found) == {m.sid for m in members}
            for member in members:
                assert found[member.sid]["data"] == {"server": _name(servers, member.server)}
                assert "room" in found[member.sid]["rooms"]

        # 4. sockets_join across servers and languages
        on_node = next(m for m in members if m.server is node and m.kind == "pys")
        on_py0 = next(m for m in members if m.server is pys[0] and m.kind == "js")
        await pys[2].call("socketsJoin", to=on_node.sid, rooms=["vip"])
        await node.call("socketsJoin", to=on_py0.sid, rooms=["vip"])
        await wait_until(lambda: _rooms_has(node, on_node.sid, "vip"))
        await wait_until(lambda: _rooms_has(pys[0], on_py0.sid, "vip"))
        await pys[1].call("emit", event="vip-news", args=["hi"], to="vip")
        for member in (on_node, on_py0):
            await wait_until(lambda m=member: _has(m, "vip-news", 1))

        # 5. broadcast acks gathered from the clients of every server
        for server in (pys[0], node):
            got = await server.call("gather", event="q", args=[0], to="room")
            assert sorted(got) == sorted(f"ack:{m.sid}" for m in members), server

        # 6. disconnect_sockets across servers and languages
        victim_on_py1 = next(m for m in members if m.server is pys[1] and m.kind == "pys")
        victim_on_node = next(m for m in members if m.server is node and m.kind == "js")
        await node.call("disconnectSockets", to=victim_on_py1.sid)
        await pys[0].call("disconnectSockets", to=victim_on_node.sid)
        for victim in (victim_on_py1, victim_on_node):
            await wait_until(lambda v=victim: _has(v, "$disconnect", 1))
        members = [m for m in members if m not in (victim_on_py1, victim_on_node)]
        await wait_until(lambda: _fetch_count(pys[2], len(members)))

        # 7. Redis restarted mid-run
        own_redis.stop()
        await wait_until(lambda: _disconnected(pys[0]))
        await pys[0].call("emit", event="during", args=[1], to="room")  # local at once, queued for the rest
        own_redis.start()
        for server in pys:
            await wait_until(lambda s=server: _connected(s), timeout=20)
        await wait_until(lambda: _count_is(pys[0], 4), timeout=20)
        await trio.sleep(1.0)  # every server (Node included) has re-subscribed
        await pys[1].call("emit", event="after", args=[2], to="room")
        await node.call("emit", event="after", args=[3], to="room")
        for member in members:
            await wait_until(lambda m=member: _has(m, "after", 2), timeout=20, what=f"after at {member}")
            assert sorted(e[1] for e in await events_of(member, "after")) == [2, 3], member
            # What pys[0] broadcast while Redis was away: its own clients had it at once; the
            # other volleyio servers read it from the stream (Redis Streams); over pub/sub
            # (sharded) only the servers already re-subscribed when it was published get it.
            if member.server is pys[0] or (kind == "streams" and member.server is not node):
                await wait_until(lambda m=member: _has(m, "during", 1), what=f"during at {member}")
            assert len(await events_of(member, "during")) <= 1

        # 8. a volleyio server killed with SIGKILL leaves the others' views
        dead = pys[2]
        assert dead.uid in await pys[0].call("nodes")
        dead.sigkill()
        await wait_until(lambda: _not_in_nodes(pys[0], dead.uid), timeout=HEARTBEAT["heartbeat_timeout"] + 2)
        await wait_until(lambda: _count_is(node, 3))
        remaining = [m for m in members if m.server is not dead]
        found = await pys[1].call("fetchSockets")
        assert {s["id"] for s in found} == {m.sid for m in remaining}
        assert sorted(await node.call("serverSideEmitWithAck", event="hello", args=[3])) == ["py0:3", "py1:3"]
    finally:
        for peer in [*servers, node_clients, pys_clients]:
            await peer.stop()


def _name(servers: list[ServerPeer], server: ServerPeer) -> str:
    return ["py0", "py1", "py2", "node"][servers.index(server)]


async def _count_is(server: ServerPeer, n: int) -> bool:
    return bool(await server.call("serverCount") == n)


async def _has(member: Member, name: str, n: int) -> bool:
    return len(await events_of(member, name)) >= n


async def _rooms_has(server: ServerPeer, sid: str, room: str) -> bool:
    return room in (await server.call("rooms", sid=sid) or [])


async def _fetch_count(server: ServerPeer, n: int) -> bool:
    return len(await server.call("fetchSockets")) == n


async def _disconnected(server: ServerPeer) -> bool:
    return not (await server.call("stats"))["connected"]


async def _connected(server: ServerPeer) -> bool:
    return bool((await server.call("stats"))["connected"])


async def _not_in_nodes(server: ServerPeer, uid: str) -> bool:
    return uid not in await server.call("nodes")
