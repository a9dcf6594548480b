"""Connection state recovery (Socket.IO 4.6 semantics): the sans-I/O store and core, and
the trio server against the official socket.io-client (tests/js/sio_recovery.js) and
volleyio's own trio client."""

from __future__ import annotations

import json
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from volleyio.socketio import BroadcastOptions, RecoveryConfig, RecoveryStore
from volleyio.socketio.recovery import RECOVERABLE_REASONS, SavedSession
from volleyio.trio import Socket, SocketIOServer

from test_socketio_interop import node, run_driver  # noqa: F401 - fixture

JS = Path(__file__).parent / "js"
MISSED = 5


# ---------------------------------------------------------------------------- the store


def saved(pid: str = "p", rooms: tuple[str, ...] = ("s", "r"), at: float = 0.0) -> SavedSession:
    return SavedSession("s", pid, "/", rooms, {"k": 1}, at)


def test_store_replays_what_the_session_missed_in_order() -> None:
    store = RecoveryStore(RecoveryConfig())
    first = store.next_offset()
    store.record(BroadcastOptions("/"), ["a"], 0.0)
    store.record(BroadcastOptions("/", frozenset({"r"})), ["b"], 0.0)
    store.record(BroadcastOptions("/", frozenset({"other"})), ["c"], 0.0)
    store.record(BroadcastOptions("/", except_rooms=frozenset({"r"})), ["d"], 0.0)
    store.record(BroadcastOptions("/", except_sids=frozenset({"s"})), ["e"], 0.0)
    store.record(BroadcastOptions("/chat"), ["f"], 0.0)
    store.record(BroadcastOptions("/", frozenset({"s"})), ["g"], 0.0)
    store.persist(saved(at=1.0))
    restored = store.restore("p", first, "/", 2.0)
    assert not isinstance(restored, str)
    assert restored.missed == [["b"], ["g"]]
    assert restored.sid == "s" and restored.data == {"k": 1} and set(restored.rooms) == {"s", "r"}
    assert store.restore("p", first, "/", 2.0) == "unknown session"  # restored once


def test_store_refusals() -> None:
    store = RecoveryStore(RecoveryConfig(max_disconnection_ms=1000, max_packets=3, max_sessions=2))
    offset = store.next_offset()
    store.record(BroadcastOptions("/"), ["a"], 0.0)
    store.persist(saved("old", at=0.0))
    assert store.restore("old", offset, "/", 1.5) == "session expired"
    assert store.restore("nope", offset, "/", 1.5) == "unknown session"
    store.persist(saved("x", at=2.0))
    assert store.restore("x", offset, "/chat", 2.0) == "unknown session"  # another namespace
    store.persist(saved("x", at=2.0))
    for letter in "bcd":  # the cap drops "a": the offset is gone, so no replay with a gap
        store.record(BroadcastOptions("/"), [letter], 2.0)
    assert store.packet_count == 3
    assert store.restore("x", offset, "/", 2.0) == "offset unavailable"
    for offset in ("", "zz-1", offset.split("-")[0] + "-x", offset.split("-")[0] + "-99", "-1"):
        store.persist(saved("y", at=2.0))
        assert store.restore("y", offset, "/", 2.0) == "offset unavailable"
    for pid in "abc":  # the session cap keeps the newest two
        store.persist(saved(pid, at=3.0))
    assert store.session_count == 2


# ---------------------------------------------------------------------------- the trio server


def build_server(log: list[dict[str, Any]], **recovery: Any) -> SocketIOServer:
    sio = SocketIOServer(
        ping_interval=0.4, ping_timeout=0.4, connection_state_recovery=RecoveryConfig(**recovery)
    )
    middleware_runs: list[str] = []

    def middleware(socket: Socket, auth: Any) -> None:
        middleware_runs.append(socket.id)

    sio.use(middleware)

    @sio.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        log.append({"id": socket.id, "recovered": socket.recovered, "refused": socket.recovery_refused,
                    "middlewares": len(middleware_runs)})
        if not socket.recovered:
            socket.data["visits"] = 0
        socket.data["visits"] += 1
        if isinstance(auth, dict) and "pid" in auth:
            await socket.emit("after", "new")

    @sio.on("join")
    async def join(socket: Socket, room: str) -> bool:
        await socket.join(room)
        socket.data["room"] = room
        return True

    @sio.on("prime")
    async def prime(socket: Socket, room: str) -> bool:
        await sio.emit("news", 0, to=room)
        await socket.emit("direct", 0)
        return True

    @sio.on("disconnect")
    async def disconnect(socket: Socket, reason: str) -> None:
        log.append({"disconnect": socket.id, "reason": reason})
        if reason in RECOVERABLE_REASONS:
            room = socket.data["room"]
            for i in range(1, MISSED + 1):  # the client is away: it misses all of these
                await sio.emit("news", i, to=room)
                if i % 2:
                    await sio.emit("direct", i, to=socket.id)
                else:  # the disconnected Socket object: kept for its recovery too (Node)
                    await socket.emit("direct", i)

    @sio.on("state")
    async def state(socket: Socket) -> dict[str, Any]:
        return {"id": socket.id, "rooms": sorted(socket.rooms), "data": socket.data, "recovered": socket.recovered}

    return sio


async def run_node(node: str, how: str, bogus_pid: bool = False, **recovery: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # noqa: F811
    log: list[dict[str, Any]] = []
    sio = build_server(log, **recovery)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(sio.serve, "127.0.0.1", 0))
        config = {"url": f"http://127.0.0.1:{server.port}", "how": how, "room": "lobby", "bogus_pid": bogus_pid}
        try:
            out = await run_driver([node, "sio_recovery.js", json.dumps(config)], JS)
        finally:
            nursery.cancel_scope.cancel()
    return out, log


def expected_replay() -> list[dict[str, Any]]:
    events = []
    for i in range(1, MISSED + 1):
        events += [("news", i), ("direct", i)]
    return [{"event": e, "n": n} for e, n in events] + [{"event": "after", "n": "new"}]


def received(out: dict[str, Any]) -> list[dict[str, Any]]:
    # The offset is the last argument of every replayed event (the client keeps it).
    return [{"event": r["event"], "n": r["args"][0]} for r in out["replayed"]]


@pytest.mark.parametrize("how", ["drop", "ping"])
async def test_node_client_recovers(node: str, how: str) -> None:  # noqa: F811
    out, log = await run_node(node, how)
    first, second = out["connects"]
    assert first["recovered"] is False and second["recovered"] is True
    assert second["id"] == first["id"]
    assert out["reason"] in ("transport close", "ping timeout")
    assert received(out) == expected_replay()
    offsets = [r["args"][-1] for r in out["before"] + out["replayed"] if r["event"] != "after"]
    assert all(isinstance(o, str) for o in offsets) and len(set(offsets)) == len(offsets)
    assert out["state"] == {"id": first["id"], "rooms": sorted([first["id"], "lobby"]),
                            "data": {"visits": 2, "room": "lobby"}, "recovered": True}
    connects = [entry for entry in log if "recovered" in entry]
    assert connects[1]["recovered"] is True and connects[1]["refused"] is None
    assert connects[1]["middlewares"] == 1  # skip_middlewares (default) on recovery
    reasons = [entry["reason"] for entry in log if "reason" in entry]
    assert reasons[0] == ("transport close" if how == "drop" else "ping timeout")


async def test_node_client_unknown_pid_gets_a_fresh_connection(node: str) -> None:  # noqa: F811
    out, log = await run_node(node, "drop", bogus_pid=True)
    first, second = out["connects"]
    assert second["recovered"] is False and second["id"] != first["id"]
    assert received(out) == [{"event": "after", "n": "new"}]
    assert out["state"]["rooms"] == [second["id"]]
    connects = [entry for entry in log if "recovered" in entry]
    assert connects[1]["refused"] == "unknown session" and connects[1]["middlewares"] == 2


async def test_node_client_expired_session(node: str) -> None:  # noqa: F811
    out, log = await run_node(node, "drop", max_disconnection_ms=300)  # the client comes back after 800 ms
    assert out["connects"][1]["recovered"] is False
    assert received(out) == [{"event": "after", "n": "new"}]
    assert [entry for entry in log if "recovered" in entry][1]["refused"] == "session expired"


async def test_node_client_offset_dropped_by_the_cap(node: str) -> None:  # noqa: F811
    out, log = await run_node(node, "drop", max_packets=4)  # 10 missed packets push its offset out
    assert out["connects"][1]["recovered"] is False
    assert received(out) == [{"event": "after", "n": "new"}]
    assert [entry for entry in log if "recovered" in entry][1]["refused"] == "offset unavailable"


async def test_connect_answer_has_pid_only_with_recovery() -> None:
    from volleyio.socketio.server import SocketIOConfig
    from volleyio.socketio.server import SocketIOServer as Core

    class Transport:
        def __init__(self) -> None:
            self.sent: list[Any] = []

        def send(self, sid: str, data: Any, *, volatile: bool = False) -> bool:
            self.sent.append(data)
            return True

        def close(self, sid: str, now: float) -> None:
            pass

    for recovery, keys in ((None, ["sid"]), (RecoveryConfig(), ["pid", "sid"])):
        transport = Transport()
        core = Core(transport, SocketIOConfig(recovery=recovery))
        core.engineio_connected("e", 0.0)
        core.engineio_message("e", "0", 0.0)
        assert sorted(json.loads(transport.sent[0][1:])) == keys
        sid = json.loads(transport.sent[0][1:])["sid"]
        core.broadcast("/", "x", 1)
        core.emit(sid, "y", 2)
        core.emit(sid, "z", 3, volatile=True)
        core.emit(sid, "w", 4, with_ack=True)
        frames = [json.loads(m[1:].lstrip("0123456789")) for m in transport.sent[1:]]
        if recovery is None:
            assert frames == [["x", 1], ["y", 2], ["z", 3], ["w", 4]]
        else:  # offsets on plain events only, never on volatile or acked ones (as Node)
            assert [f[:2] for f in frames] == [["x", 1], ["y", 2], ["z", 3], ["w", 4]]
            assert [len(f) for f in frames] == [3, 3, 2, 2]


# ---------------------------------------------------------------------------- volleyio's client


class Relay:
    """A loopback TCP relay whose connections can be cut (a dropped network path)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.streams: list[trio.SocketStream] = []

    async def serve(self, nursery: trio.Nursery) -> int:
        listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
        return int(listeners[0].socket.getsockname()[1])

    async def _handle(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream)
        self.streams += [client, upstream]

        async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
            try:
                while data := await source.receive_some(65536):
                    await sink.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            for stream in (source, sink):
                await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, upstream)
            nursery.start_soon(pump, upstream, client)

    async def cut(self) -> None:
        streams, self.streams = self.streams, []
        for stream in streams:
            await stream.aclose()


# A cut WebSocket ends the server's session at once ("transport close"); a polling session
# outlives a cut TCP connection until its ping timeout (0.8 s here), so that client waits
# longer before coming back (sooner, the old socket is still connected: a fresh one).
@pytest.mark.parametrize(("transports", "delay"), [(("websocket",), 0.3), (("polling",), 1.5)])
async def test_volleyio_client_recovers(transports: tuple[str, ...], delay: float) -> None:
    from volleyio.trio import connect_socketio

    log: list[dict[str, Any]] = []
    sio = build_server(log)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(sio.serve, "127.0.0.1", 0))
            relay = Relay(server.port)
            port = await relay.serve(nursery)
            got: list[tuple[str, Any]] = []
            async with connect_socketio(
                f"http://127.0.0.1:{port}", transports=transports, reconnection_delay=delay,
                reconnection_delay_max=delay, randomization_factor=0.0,
            ) as client:
                for name in ("news", "direct", "after"):
                    client.on(name, handler=partial(lambda name, *args: got.append((name, args)), name))
                first = client.sid()
                assert client.recovered() is False
                assert await client.call("join", "lobby") is True
                assert await client.call("prime", "lobby") is True
                while len(got) < 2:
                    await trio.sleep(0.01)
                assert {(name, args[0]) for name, args in got} == {("news", 0), ("direct", 0)}
                got.clear()
                await relay.cut()
                while not any(name == "after" for name, _ in got):
                    await trio.sleep(0.01)
                assert client.sid() == first and client.recovered() is True, log
                assert [{"event": name, "n": args[0]} for name, args in got] == expected_replay(), log
                state = await client.call("state")
                assert state["id"] == first and "lobby" in state["rooms"] and state["data"]["visits"] == 2
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------- Node's server as the reference


async def start_node_server(node: str, nursery: trio.Nursery) -> tuple[int, trio.Process]:  # noqa: F811
    process = await nursery.start(partial(
        trio.run_process, [node, "sio_recovery_server.js", "{}"], cwd=str(JS),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, check=False,
    ))
    assert process.stdout is not None
    line = b""
    with trio.fail_after(10):
        while not line.endswith(b"\n"):
            line += await process.stdout.receive_some(1)
    return int(json.loads(line)["port"]), process


async def test_node_client_against_node_server(node: str) -> None:  # noqa: F811
    """The driver's expectations hold against Node's own implementation."""
    async with trio.open_nursery() as nursery:
        port, process = await start_node_server(node, nursery)
        try:
            config = {"url": f"http://127.0.0.1:{port}", "how": "drop", "room": "lobby"}
            out = await run_driver([node, "sio_recovery.js", json.dumps(config)], JS)
        finally:
            process.kill()
    first, second = out["connects"]
    assert second["recovered"] is True and second["id"] == first["id"]
    assert received(out) == expected_replay()


@pytest.mark.parametrize("transports", [("websocket",), ("polling",)])
async def test_volleyio_client_against_node_server(node: str, transports: tuple[str, ...]) -> None:  # noqa: F811
    """Node replays the missed packets *before* its CONNECT answer: the client holds them."""
    from volleyio.trio import connect_socketio

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port, process = await start_node_server(node, nursery)
            relay = Relay(port)
            relay_port = await relay.serve(nursery)
            got: list[tuple[str, Any]] = []
            delay = 0.3 if transports == ("websocket",) else 1.5
            async with connect_socketio(
                f"http://127.0.0.1:{relay_port}", transports=transports, reconnection_delay=delay,
                reconnection_delay_max=delay, randomization_factor=0.0,
            ) as client:
                for name in ("news", "direct", "after"):
                    client.on(name, handler=partial(lambda name, *args: got.append((name, args)), name))
                first = client.sid()
                assert await client.call("join", "lobby") is True
                assert await client.call("prime", "lobby") is True
                while len(got) < 2:
                    await trio.sleep(0.01)
                got.clear()
                await relay.cut()
                while not any(name == "after" for name, _ in got):
                    await trio.sleep(0.01)
                assert client.sid() == first and client.recovered() is True
                assert [{"event": name, "n": args[0]} for name, args in got] == expected_replay()
                state = await client.call("state")
                assert state["recovered"] is True and state["data"]["visits"] == 2 and state["middlewares"] == 1
            process.kill()
            nursery.cancel_scope.cancel()


def test_client_core_sends_pid_and_offset_and_holds_early_events() -> None:
    from volleyio.socketio import SocketIOClient
    from volleyio.socketio.client import ClientConnected, ClientEventReceived

    core = SocketIOClient()
    core.engineio_opened()
    core.connect("/", {"token": "t"})
    assert core.data_to_send() == ['0{"token":"t"}']
    core.receive('0{"sid":"s1","pid":"p1"}')
    events = core.receive('2["news",1,"o-1"]')
    assert [e.args for e in events if isinstance(e, ClientEventReceived)] == [[1, "o-1"]]
    core.engineio_closed("transport close")
    core.engineio_opened()
    core.connect("/", {"token": "t"})
    assert json.loads(core.data_to_send()[0][1:]) == {"pid": "p1", "offset": "o-1", "token": "t"}
    assert core.receive('2["news",2,"o-2"]') == []  # before the CONNECT answer: held
    events = core.receive('0{"sid":"s1","pid":"p1"}')
    assert isinstance(events[0], ClientConnected) and events[0].recovered is True
    assert [e.args for e in events[1:] if isinstance(e, ClientEventReceived)] == [[2, "o-2"]]
    assert core.recovered("/") is True
    core.engineio_closed("transport close")
    core.engineio_opened()
    core.connect("/")
    assert json.loads(core.data_to_send()[0][1:]) == {"pid": "p1", "offset": "o-2"}
    events = core.receive('0{"sid":"s2","pid":"p2"}')  # refused: a fresh session
    assert isinstance(events[0], ClientConnected) and events[0].recovered is False
    core.disconnect("/")  # leaving on purpose forgets the session
    core.data_to_send()
    core.add_namespace("/")
    core.engineio_closed("transport close")
    core.engineio_opened()
    core.connect("/")
    assert core.data_to_send() == ["0"]


def test_recovery_with_a_cluster_adapter_is_refused() -> None:
    from volleyio.trio import RedisStreamsAdapter

    with pytest.raises(ValueError, match="cluster"):
        SocketIOServer(adapter=RedisStreamsAdapter("redis://127.0.0.1:1"), connection_state_recovery=True)


async def test_middlewares_run_again_unless_skipped() -> None:
    """skip_middlewares=False: a recovered socket goes through the middlewares again."""
    from volleyio.trio import connect_socketio

    log: list[dict[str, Any]] = []
    sio = build_server(log, skip_middlewares=False)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(sio.serve, "127.0.0.1", 0))
            relay = Relay(server.port)
            port = await relay.serve(nursery)
            async with connect_socketio(
                f"http://127.0.0.1:{port}", transports=["websocket"], reconnection_delay=0.2,
                reconnection_delay_max=0.2, randomization_factor=0.0,
            ) as client:
                first = client.sid()
                await client.call("join", "lobby")
                await client.call("prime", "lobby")
                await relay.cut()
                while not client.recovered():
                    await trio.sleep(0.01)
                assert client.sid() == first
            connects = [entry for entry in log if "recovered" in entry]
            assert [c["recovered"] for c in connects] == [False, True]
            assert connects[1]["middlewares"] == 2  # the middleware ran for the recovery too
            nursery.cancel_scope.cancel()


def test_store_replays_everything_or_refuses_randomized() -> None:
    """Random broadcasts (rooms, exclusions, namespaces) under small caps; a session
    restored from any offset gets exactly the packets it would have received after that
    offset, or a refusal when that offset is no longer kept: never a gap."""
    import random

    rng = random.Random(1234)
    rooms = ["a", "b", "c", "s"]
    outcomes = {False: 0, True: 0}
    for trial in range(200):
        store = RecoveryStore(RecoveryConfig(max_disconnection_ms=10_000, max_packets=rng.randint(1, 30)))
        history: list[tuple[str, BroadcastOptions, list[str]]] = []
        now = 0.0
        for n in range(rng.randint(1, 60)):
            options = BroadcastOptions(
                rng.choice(["/", "/", "/x"]),
                frozenset(rng.sample(rooms, rng.randint(0, 2))),
                frozenset(rng.sample(rooms, rng.randint(0, 1))),
                frozenset(rng.sample(["s", "t"], rng.randint(0, 1))),
            )
            offset = store.next_offset()
            message = [f"{trial}-{n}"]
            store.record(options, message, now)
            history.append((offset, options, message))
            now += rng.random() * 0.5  # seconds: some packets age out (10 s), most do not
        session_rooms = tuple(rng.sample(["a", "b", "c"], rng.randint(0, 3))) + ("s",)
        start = rng.randrange(len(history))
        store.persist(SavedSession("s", "p", "/", session_rooms, None, now))
        result = store.restore("p", history[start][0], "/", now)
        expected = []
        for _, options, message in history[start + 1:]:
            included = (not options.rooms or any(r in options.rooms for r in session_rooms)) \
                and not any(r in options.except_rooms for r in session_rooms) and "s" not in options.except_sids
            if options.namespace == "/" and included:
                expected.append(message)
        outcomes[isinstance(result, str)] += 1
        if isinstance(result, str):
            assert result == "offset unavailable"
            # refused only when the offset really was dropped (by the cap or by age)
            assert start < len(history) - store.packet_count
        else:
            assert result.missed == expected
    assert min(outcomes.values()) > 20  # both replays and refusals were exercised
