"""The trio Socket.IO server end to end: python-socketio's AsyncClient (asyncio, run in a
worker thread) and raw Engine.IO-over-WebSocket wire tests (volleyio.trio.connect)."""

from __future__ import annotations

import asyncio
import builtins
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

import volleyio.trio as vt
from _trio_support import require_peer
from volleyio.engineio import PreparedPacket
from volleyio.errors import VolleyError
from volleyio.socketio import ConnectionRefusedError as CoreConnectionRefusedError
from volleyio.trio._socketio_server import (
    ConnectionRefusedError,
    DisconnectedError,
    Socket,
    SocketIOServer,
)



@pytest.fixture
def socketio() -> Any:
    """python-socketio (the ``interop`` extra), for the tests that use its AsyncClient."""
    try:
        import socketio as module
    except ImportError:
        module = None
    require_peer(module is not None, "python-socketio (pip install volleyio[interop])")
    return module

T = TypeVar("T")
TIMEOUT = 30.0


# ------------------------------------------------------------------ helpers


@asynccontextmanager
async def running(sio: SocketIOServer) -> AsyncIterator[int]:
    """Serve ``sio`` on a free loopback port for the duration of the block."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(sio.serve, "127.0.0.1", 0)
            yield server.port
            nursery.cancel_scope.cancel()


async def in_asyncio(func: Callable[[], Awaitable[T]]) -> T:
    """Run an asyncio coroutine function (python-socketio) in a worker thread."""

    def run() -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(func(), 20)

        return asyncio.run(bounded())

    return await trio.to_thread.run_sync(run)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


class Raw:
    """A raw Engine.IO v4 client over WebSocket: Socket.IO packets written by hand."""

    def __init__(self, ws: vt.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, sio_packet: str | bytes) -> None:
        await self.ws.send(sio_packet if isinstance(sio_packet, bytes) else "4" + sio_packet)

    async def receive(self) -> str | bytes:
        """The next Socket.IO message (answers pings on the way)."""
        while True:
            message = await self.ws.receive()
            if isinstance(message, bytes):
                return message
            if message == "2":
                await self.ws.send("3")
                continue
            assert message.startswith("4"), message
            return message[1:]

    async def connect(self, nsp: str = "/", auth: Any = None) -> str:
        prefix = "0" if nsp == "/" else f"0{nsp},"
        await self.send(prefix + (json.dumps(auth) if auth is not None else ""))
        reply = await self.receive()
        assert isinstance(reply, str) and reply.startswith(prefix), reply
        sid: str = json.loads(reply[len(prefix):])["sid"]
        return sid

    async def closed(self) -> bool:
        """Read until the server closes; True if it did (no further Socket.IO message)."""
        try:
            while True:
                message = await self.ws.receive()
                if message not in ("2", "6"):
                    return False
        except vt.ConnectionClosed:
            return True


@asynccontextmanager
async def raw(port: int) -> AsyncIterator[Raw]:
    async with vt.connect(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket") as ws:
        opening = await ws.receive()
        assert isinstance(opening, str) and opening.startswith("0{")
        yield Raw(ws)


# ------------------------------------------------------------------ connect, auth, namespaces


@pytest.mark.interop
async def test_connect_with_auth_and_refusal(socketio: Any) -> None:
    sio = SocketIOServer()
    seen: list[Any] = []

    @sio.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        seen.append(auth)
        if auth.get("token") != "good":
            raise ConnectionRefusedError("unauthorized", {"retry": False})
        await socket.emit("auth", auth)  # held until the CONNECT answer, then delivered

    async with running(sio) as port:

        async def client() -> tuple[Any, Any, str]:
            good = socketio.AsyncClient()
            echoed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            good.on("auth", lambda data: echoed.set_result(data))
            await good.connect(url(port), auth={"token": "good"})
            result = await echoed
            await good.disconnect()
            bad = socketio.AsyncClient()
            errors: list[Any] = []
            bad.on("connect_error", lambda data: errors.append(data))
            with pytest.raises(socketio.exceptions.ConnectionError):
                await bad.connect(url(port), auth={"token": "bad"}, transports=["websocket"])
            return result, errors[0], good.sid or ""

        echoed, error, _ = await in_asyncio(client)
        assert echoed == {"token": "good"}
        assert error == {"message": "unauthorized", "data": {"retry": False}}
        assert seen == [{"token": "good"}, {"token": "bad"}]
        # The wire answer, exactly.
        async with raw(port) as peer:
            await peer.send('0{"token":"bad"}')
            assert await peer.receive() == '4{"message":"unauthorized","data":{"retry":false}}'
            assert await peer.connect(auth={"token": "good"})
        assert sio.statistics()["pending_acks"] == 0


async def test_refusal_is_a_volley_error_and_the_core_name() -> None:
    assert issubclass(ConnectionRefusedError, VolleyError)
    assert ConnectionRefusedError is CoreConnectionRefusedError
    exc = ConnectionRefusedError("no", [1])
    assert (exc.message, exc.data) == ("no", [1])


async def test_middleware_refuses_and_connect_returning_false_refuses() -> None:
    sio = SocketIOServer()
    admin = sio.of("/admin")
    order: list[str] = []

    @admin.use
    async def check(socket: Socket, auth: Any) -> None:
        order.append("middleware")
        if not auth.get("admin"):
            raise ConnectionRefusedError("admins only")

    @admin.on("connect")
    async def connect(socket: Socket, auth: Any) -> bool:
        order.append("connect")
        if auth.get("oserror"):
            raise builtins.ConnectionRefusedError("10.0.0.7:5432 refused")
        if auth.get("bug"):
            raise KeyError("bug")
        return bool(auth.get("ok"))

    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.send("0/admin,{}")
            assert await peer.receive() == '4/admin,{"message":"admins only"}'
            await peer.send('0/admin,{"admin":true}')
            assert await peer.receive() == '4/admin,{"message":"Connection rejected by server"}'
            await peer.send('0/admin,{"admin":true,"oserror":true}')
            assert await peer.receive() == '4/admin,{"message":"Connection refused by server"}'
            await peer.send('0/admin,{"admin":true,"bug":true}')
            assert await peer.receive() == '4/admin,{"message":"Internal server error"}'
            assert await peer.connect("/admin", {"admin": True, "ok": True})
    assert order == ["middleware"] + ["middleware", "connect"] * 4


@pytest.mark.interop
async def test_unknown_namespace(socketio: Any) -> None:
    sio = SocketIOServer()
    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.send("0/random,")
            assert await peer.receive() == '4/random,{"message":"Invalid namespace"}'
            assert await peer.connect("/")  # the connection is still usable

        async def client() -> str:
            c = socketio.AsyncClient()
            try:
                await c.connect(url(port), namespaces=["/random"], transports=["websocket"])
            except socketio.exceptions.ConnectionError as exc:
                return str(exc)
            return "connected"

        assert "failed to connect" in await in_asyncio(client)


@pytest.mark.interop
async def test_two_namespaces_on_one_connection(socketio: Any) -> None:
    sio = SocketIOServer()
    sockets: dict[str, Socket] = {}

    for name in ("/", "/chat"):

        @sio.on("connect", namespace=name)
        async def connect(socket: Socket, auth: Any) -> None:
            sockets[socket.namespace] = socket

        @sio.on("where", namespace=name)
        async def where(socket: Socket) -> str:
            return socket.namespace

    async with running(sio) as port:

        async def client() -> list[Any]:
            c = socketio.AsyncClient()
            await c.connect(url(port), namespaces=["/", "/chat"], transports=["websocket"])
            answers = [await c.call("where", timeout=5), await c.call("where", namespace="/chat", timeout=5)]
            await c.disconnect()
            return answers

        assert await in_asyncio(client) == ["/", "/chat"]
    main, chat = sockets["/"], sockets["/chat"]
    assert main.id != chat.id and main.eio_sid == chat.eio_sid
    assert main.id != main.eio_sid


async def test_dynamic_namespaces() -> None:
    sio = SocketIOServer()
    dyn = sio.of(re.compile(r"/dyn-\d+"))
    created: list[str] = []

    @dyn.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        created.append(socket.namespace)

    @dyn.on("name")
    async def name(socket: Socket) -> str:
        return socket.namespace

    async def allow(name: str, auth: Any) -> bool:
        await trio.lowlevel.checkpoint()
        return name.startswith("/team-") and auth == {"key": 1}

    team = sio.of(allow)

    @team.on("hello")
    async def hello(socket: Socket) -> str:
        return "team " + socket.namespace

    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.connect("/dyn-1")
            await peer.connect("/dyn-22")
            await peer.send('2/dyn-22,5["name"]')
            assert await peer.receive() == '3/dyn-22,5["/dyn-22"]'
            await peer.send("0/dyn-x,")
            assert await peer.receive() == '4/dyn-x,{"message":"Invalid namespace"}'
            await peer.send('0/team-a,{"key":2}')
            assert await peer.receive() == '4/team-a,{"message":"Invalid namespace"}'
            await peer.connect("/team-a", {"key": 1})
            await peer.send('2/team-a,1["hello"]')
            assert await peer.receive() == '3/team-a,1["team /team-a"]'
            assert set(sio.namespaces) >= {"/dyn-1", "/dyn-22", "/team-a"}
            assert set(dyn.children) == {"/dyn-1", "/dyn-22"}
            # Emitting on the parent reaches every child.
            await dyn.emit("news", 1)
            assert sorted([await peer.receive(), await peer.receive()]) == ['2/dyn-1,["news",1]', '2/dyn-22,["news",1]']
    assert created == ["/dyn-1", "/dyn-22"]


# ------------------------------------------------------------------ events, acks, binary


@pytest.mark.interop
async def test_acks_both_directions_and_binary_attachments(socketio: Any) -> None:
    sio = SocketIOServer()

    @sio.on("echo")
    async def echo(socket: Socket, *args: Any) -> tuple[Any, ...]:
        return args

    @sio.on("single")
    async def single(socket: Socket) -> dict[str, int]:
        return {"n": 1}

    @sio.on("ask")
    async def ask(socket: Socket, value: int) -> Any:
        return await socket.call("double", value)

    payload = [b"\x00\x01", {"nested": [b"\xff" * 3, "text"]}, b"", 7]

    async with running(sio) as port:
        for transports in (["websocket"], ["polling"], ["polling", "websocket"]):

            async def client() -> list[Any]:
                c = socketio.AsyncClient()
                c.on("double", lambda value: value * 2)
                await c.connect(url(port), transports=transports)
                answers = [
                    await c.call("echo", tuple(payload), timeout=5),
                    await c.call("single", timeout=5),
                    await c.call("ask", 21, timeout=5),
                ]
                await c.disconnect()
                return answers

            echoed, single_value, asked = await in_asyncio(client)
            assert list(echoed) == payload
            assert single_value == {"n": 1}
            assert asked == 42

        # Wire: BINARY_EVENT with several attachments -> BINARY_ACK with them.
        async with raw(port) as peer:
            await peer.connect()
            await peer.send('53-9["echo",{"_placeholder":true,"num":0},[{"_placeholder":true,"num":2}],{"_placeholder":true,"num":1}]')
            for blob in (b"a", b"bb", b"ccc"):
                await peer.send(blob)
            header = await peer.receive()
            assert header == '63-9[{"_placeholder":true,"num":0},[{"_placeholder":true,"num":1}],{"_placeholder":true,"num":2}]'
            assert [await peer.receive() for _ in range(3)] == [b"a", b"ccc", b"bb"]


async def test_event_right_behind_its_connect_in_one_read() -> None:
    """A client that does not wait for the CONNECT answer: CONNECT and an EVENT in one
    TCP write reach the server in one read; the event is handled once the (synchronous)
    connect handler has joined the namespace."""
    sio = SocketIOServer()

    @sio.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        await socket.join("room")

    @sio.on("echo")
    async def echo(socket: Socket, value: Any) -> Any:
        return value

    async with running(sio) as port:
        async with raw(port) as peer:
            proto = peer.ws._proto
            proto.send_text("40")
            proto.send_text('421["echo","pipelined"]')
            await peer.ws._write(proto.data_to_send())  # both frames in one write
            assert str(await peer.receive()).startswith("0{")
            assert await peer.receive() == '31["pipelined"]'


@pytest.mark.interop
async def test_many_acks_in_flight(socketio: Any) -> None:
    sio = SocketIOServer()
    results: list[Any] = []

    @sio.on("go")
    async def go(socket: Socket, count: int) -> int:
        async def one(i: int) -> None:
            results.append((i, await socket.call("square", i)))

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
        return len(results)

    async with running(sio) as port:

        async def client() -> int:
            c = socketio.AsyncClient()

            async def square(i: int) -> int:
                await asyncio.sleep(0)
                return i * i

            c.on("square", square)
            await c.connect(url(port), transports=["websocket"])
            done: int = await c.call("go", 200, timeout=15)
            await c.disconnect()
            return done

        assert await in_asyncio(client) == 200
    assert sorted(results) == [(i, i * i) for i in range(200)]
    assert sio.statistics()["pending_acks"] == 0


async def test_cancelled_call_leaves_no_pending_ack() -> None:
    sio = SocketIOServer()
    connected: list[Socket] = []

    @sio.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        connected.append(socket)

    async with running(sio) as port:
        async with raw(port) as peer:
            sid = await peer.connect()
            socket = connected[0]
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(0.2):
                    await sio.call("question", 1, to=sid)
            assert socket.pending_acks == 0
            assert sio.statistics()["pending_acks"] == 0
            assert not sio.core._sockets[sid].pending_acks
            request = await peer.receive()
            match = re.fullmatch(r'2(\d+)\["question",1\]', str(request))
            assert match
            # A late answer is ignored; the connection stays usable.
            await peer.send(f"3{match.group(1)}[\"late\"]")
            async with trio.open_nursery() as nursery:

                async def answer() -> None:
                    again = await peer.receive()
                    ack = re.fullmatch(r'2(\d+)\["question",2\]', str(again))
                    assert ack
                    await peer.send(f'3{ack.group(1)}["on time"]')

                nursery.start_soon(answer)
                assert await socket.call("question", 2) == "on time"
            # A socket that goes away while awaited raises DisconnectedError.
            async with trio.open_nursery() as nursery:

                async def waiter() -> None:
                    with pytest.raises(DisconnectedError):
                        await socket.call("question", 3)

                nursery.start_soon(waiter)
                await peer.receive()
                await peer.send("1")  # client namespace disconnect
        assert sio.statistics()["pending_acks"] == 0
        with pytest.raises(DisconnectedError):
            await sio.call("question", to=sid)


@pytest.mark.interop
async def test_gather_collects_acks_that_arrive(socketio: Any) -> None:
    sio = SocketIOServer()
    ready = trio.Event()

    @sio.on("ready")
    async def on_ready(socket: Socket) -> str:
        ready.set()
        return "ok"

    async with running(sio) as port:

        async def client() -> None:
            c = socketio.AsyncClient()
            bye: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            c.on("poll", lambda question: f"yes to {question}")
            c.on("bye", lambda: bye.set_result(None))
            await c.connect(url(port), transports=["websocket"])
            await c.call("ready", timeout=5)
            await bye
            await c.disconnect()

        async with raw(port) as silent:
            silent_sid = await silent.connect()
            answers: dict[str, Any] = {}
            async with trio.open_nursery() as nursery:

                async def ask() -> None:
                    await ready.wait()
                    answers.update(await sio.gather("poll", "q", timeout=0.5))
                    await sio.emit("bye", skip=silent_sid)

                nursery.start_soon(in_asyncio, client)
                nursery.start_soon(ask)
            assert list(answers.values()) == ["yes to q"]
            assert silent_sid not in answers
            request = str(await silent.receive())
            assert re.fullmatch(r'2\d+\["poll","q"\]', request)  # the silent peer got it too
    assert sio.statistics()["pending_acks"] == 0


# ------------------------------------------------------------------ rooms, disconnects


async def test_rooms_broadcast_and_member_counts_after_disconnects() -> None:
    sio = SocketIOServer()
    main = sio.of("/")

    @sio.on("join")
    async def join(socket: Socket, room: str) -> list[str]:
        await socket.join(room)
        return sorted(socket.rooms)

    async with running(sio) as port:
        async with raw(port) as a, raw(port) as b, raw(port) as c:
            ids = [await peer.connect() for peer in (a, b, c)]
            for peer, room in ((a, "red"), (b, "red"), (c, "blue")):
                await peer.send(f'21["join","{room}"]')
                assert json.loads(str(await peer.receive())[2:])[0] == sorted([room, ids[(a, b, c).index(peer)]])
            assert main.members("red") == {ids[0], ids[1]}
            await sio.emit("to-red", 1, to="red", skip=ids[0])
            await sio.emit("to-both", to=["red", "blue"], skip="blue")
            await sio.emit("direct", to=ids[2])
            await sio.emit("all")
            assert await b.receive() == '2["to-red",1]'
            for peer in (a, b):
                assert await peer.receive() == '2["to-both"]'
            assert await c.receive() == '2["direct"]'
            for peer in (a, b, c):
                assert await peer.receive() == '2["all"]'
            await sio.enter_room(ids[2], "red")
            assert main.members("red") == set(ids)
            await sio.leave_room(ids[2], "red")
            await b.send("1")
            await a.ws.close()
            with trio.fail_after(5):
                while main.members("red"):
                    await trio.sleep(0.01)
            assert main.members(ids[0]) == frozenset()
            assert set(main.sockets) == {ids[2]}
            await sio.close_room("blue")
            assert main.members("blue") == frozenset()


@pytest.mark.interop
async def test_disconnect_reasons(socketio: Any) -> None:
    sio = SocketIOServer()
    reasons: dict[str, str] = {}
    gone = trio.Event()

    @sio.on("disconnect")
    async def disconnect(socket: Socket, reason: str) -> None:
        reasons[socket.id] = reason
        if len(reasons) == 4:
            gone.set()

    @sio.on("kick")
    async def kick(socket: Socket) -> None:
        await socket.disconnect()

    async with running(sio) as port:

        async def client() -> str:
            c = socketio.AsyncClient(reconnection=False)
            done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            c.on("disconnect", lambda *reason: done.set_result(str(reason[0]) if reason else ""))
            await c.connect(url(port), transports=["websocket"])
            await c.emit("kick")
            return await done

        client_reason = await in_asyncio(client)
        assert client_reason == "server disconnect"
        async with raw(port) as peer:
            namespace_sid = await peer.connect()
            await peer.send("1")
            closer_sid = await peer.connect()
            await peer.ws.send("1")  # Engine.IO close
        async with raw(port) as peer:
            dropped_sid = await peer.connect()
            await peer.ws.close()
        with trio.fail_after(5):
            await gone.wait()
    assert sorted(reasons.values()) == sorted(
        ["server namespace disconnect", "client namespace disconnect", "transport close", "transport close"]
    )
    assert reasons[namespace_sid] == "client namespace disconnect"
    assert reasons[closer_sid] == reasons[dropped_sid] == "transport close"


async def test_disconnect_with_close_ends_the_connection() -> None:
    sio = SocketIOServer()
    reasons: list[tuple[str, str]] = []

    @sio.on("leave-all")
    async def leave_all(socket: Socket) -> None:
        await socket.disconnect(close=True)

    for name in ("/", "/other"):

        @sio.on("disconnect", namespace=name)
        async def disconnect(socket: Socket, reason: str) -> None:
            reasons.append((socket.namespace, reason))

    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.connect()
            await peer.connect("/other")
            await peer.send('2["leave-all"]')
            assert sorted([await peer.receive(), await peer.receive()]) == ["1", "1/other,"]
            assert await peer.closed()
        with trio.fail_after(5):
            while len(reasons) < 2 or sio.statistics()["connections"]:
                await trio.sleep(0.01)
    assert sorted(reasons) == [("/", "server namespace disconnect"), ("/other", "server namespace disconnect")]


async def test_connect_timeout_closes_idle_connection() -> None:
    sio = SocketIOServer(connect_timeout=0.2)
    async with running(sio) as port:
        async with raw(port) as peer:
            assert await peer.closed()
        assert sio.statistics()["connections"] == 0


# ------------------------------------------------------------------ flow control


async def test_volatile_drops_while_not_writable() -> None:
    sio = SocketIOServer()
    sockets: list[Socket] = []

    @sio.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        sockets.append(socket)

    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.connect()
            socket = sockets[0]
            # The peer does not read: once the socket's buffers are full the transport is
            # not writable, and volatile emits are dropped (never buffered); plain emits
            # are buffered and all delivered, after what went out before them.
            blob = "x" * 100_000
            for i in range(300):  # 30 MB: far more than loopback buffers hold
                await socket.emit("v", i, blob, volatile=True)
            for i in range(3):
                await socket.emit("n", i)
            received = []
            while True:
                message = await peer.receive()
                received.append(message)
                if message == '2["n",2]':
                    break
            volatile = [int(str(m)[6:].split(",", 1)[0]) for m in received if str(m).startswith('2["v"')]
            assert 0 < len(volatile) < 300
            assert volatile == list(range(len(volatile)))  # the first ones, in order, none twice
            assert received[-3:] == ['2["n",0]', '2["n",1]', '2["n",2]']


async def test_slow_consumer_is_disconnected() -> None:
    sio = SocketIOServer(max_buffered_bytes=64 * 1024)
    reasons: list[str] = []
    gone = trio.Event()

    @sio.on("flood")
    async def flood(socket: Socket) -> None:
        for _ in range(100):  # 1 MB without a checkpoint: nothing can drain meanwhile
            await socket.emit("blob", "x" * 10_000)

    @sio.on("disconnect")
    async def disconnect(socket: Socket, reason: str) -> None:
        reasons.append(reason)
        gone.set()

    async with running(sio) as port:
        async with raw(port) as peer, raw(port) as bystander:
            await peer.connect()
            await bystander.connect()
            await peer.send('2["flood"]')
            with trio.fail_after(5):
                await gone.wait()
            assert reasons == ["slow consumer"]
            await sio.emit("still-here", to=None)
            assert await bystander.receive() == '2["still-here"]'


async def test_slow_handler_does_not_block_other_connections_and_order_is_kept() -> None:
    sio = SocketIOServer()
    release = trio.Event()
    log: list[str] = []

    @sio.on("slow")
    async def slow(socket: Socket) -> str:
        await release.wait()
        log.append("slow")
        return "slow done"

    @sio.on("fast")
    async def fast(socket: Socket, tag: str) -> str:
        log.append(tag)
        return tag

    async with running(sio) as port:
        async with raw(port) as a, raw(port) as b:
            await a.connect()
            await b.connect()
            await a.send('21["slow"]')
            await a.send('22["fast","a-after-slow"]')
            await b.send('23["fast","b"]')
            assert await b.receive() == '33["b"]'  # a's slow handler does not hold b
            assert log == ["b"]
            release.set()
            assert await a.receive() == '31["slow done"]'
            assert await a.receive() == '32["a-after-slow"]'
    assert log == ["b", "slow", "a-after-slow"]


async def test_inbound_queue_is_bounded_and_ordered() -> None:
    sio = SocketIOServer(max_queue=4)
    release = trio.Event()
    seen: list[int] = []
    sockets: list[Socket] = []

    @sio.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        sockets.append(socket)

    @sio.on("e")
    async def e(socket: Socket, i: int) -> None:
        await release.wait()
        seen.append(i)

    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.connect()
            session = sio.engineio.session(sockets[0].eio_sid)
            assert session is not None
            for i in range(200):
                await peer.send(f'2["e",{i}]')
            # Once everything is idle: one event in its handler, 4 queued for the worker, one
            # held by the reader; the transport stopped reading, the rest waits in TCP.
            with trio.fail_after(10):
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert sio.statistics()["queued_events"] == 4
            assert session.statistics()["messages_in"] < 100
            release.set()
            await peer.send('21["e",200]')
            with trio.fail_after(10):
                while len(seen) < 201:
                    await trio.sleep(0.01)
    assert seen == list(range(201))


async def test_disconnect_is_not_held_up_by_a_stuck_handler() -> None:
    # Short heartbeat: once the transport stops reading (backpressure), the pongs are not
    # read either, so the session ends with "ping timeout".
    sio = SocketIOServer(max_queue=2, ping_interval=0.2, ping_timeout=0.2)
    release = trio.Event()
    reasons: list[str] = []
    gone = trio.Event()

    @sio.on("stuck")
    async def stuck(socket: Socket, i: int) -> None:
        await release.wait()

    @sio.on("join")
    async def join(socket: Socket) -> None:
        await socket.join("room")

    @sio.on("disconnect")
    async def disconnect(socket: Socket, reason: str) -> None:
        reasons.append(reason)
        gone.set()

    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.connect()
            await peer.send('2["join"]')
            for i in range(50):
                await peer.send(f'2["stuck",{i}]')
            # The session ends while its handler is stuck and its queue is full: rooms
            # and counts are cleaned up at once; the disconnect handler runs once the
            # queue drains.
            with trio.fail_after(10):
                while sio.statistics()["connections"]:
                    await trio.sleep(0.01)
            assert sio.of("/").members("room") == frozenset()
            assert sio.statistics()["sockets"] == 0
            assert reasons == []
            release.set()
            with trio.fail_after(10):
                await gone.wait()
    assert reasons == ["ping timeout"]


async def test_background_tasks_and_emit_to_a_socket_id_in_its_namespace() -> None:
    sio = SocketIOServer()
    chat = sio.of("/chat")
    failures = trio.Event()

    async def broken() -> None:
        failures.set()
        raise RuntimeError("background bug")

    async def later(sid: str) -> None:
        await sio.emit("later", "from the background", to=sid)  # namespace taken from the socket

    @chat.on("start")
    async def start(socket: Socket) -> None:
        sio.start_background_task(broken)
        sio.start_background_task(later, socket.id)

    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.connect("/chat")
            await peer.send('2/chat,["start"]')
            assert await peer.receive() == '2/chat,["later","from the background"]'
            with trio.fail_after(5):
                await failures.wait()
            await peer.send('2/chat,["start"]')  # the server survived the failing task
            assert await peer.receive() == '2/chat,["later","from the background"]'
    assert sio.core.prepare is PreparedPacket  # broadcasts go out encoded once


async def test_handler_exception_is_isolated() -> None:
    sio = SocketIOServer()

    @sio.on("boom")
    async def boom(socket: Socket) -> None:
        raise RuntimeError("handler bug")

    @sio.on("nan")
    async def nan(socket: Socket) -> float:
        return float("nan")  # cannot be encoded as JSON: logged, no ack

    @sio.on("echo")
    async def echo(socket: Socket, value: Any) -> Any:
        return value

    async with running(sio) as port:
        async with raw(port) as peer, raw(port) as other:
            await peer.connect()
            await other.connect()
            await peer.send('20["boom"]')
            await peer.send('23["nan"]')
            await peer.send('21["echo",1]')
            assert await peer.receive() == "31[1]"  # no ack for the failed handler
            await other.send('22["echo",2]')
            assert await other.receive() == "32[2]"


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    "packet",
    [
        '2abc["x"]',
        "2abc[",
        '2["x"',
        "abc",
        "2{}",
        '511-["x",{"_placeholder":true,"num":0}]',
        '29007199254740992["x"]',  # ack id 2**53
        '29007199254740993["x"]',
        '2/admin,["x"]',
        '2["connect"]',
        '2["disconnect"]',
        '3["x"]x',
        "0",  # a second CONNECT for a connected namespace
        "4{}",  # a client CONNECT_ERROR
    ],
)
async def test_malformed_packets_close_the_connection_without_a_handler(packet: str) -> None:
    sio = SocketIOServer()
    ran: list[Any] = []
    reasons: list[str] = []
    gone = trio.Event()

    @sio.on("x")
    async def x(socket: Socket, *args: Any) -> None:
        ran.append(args)

    @sio.on("*")
    async def anything(socket: Socket, *args: Any) -> None:
        ran.append(args)

    @sio.on("disconnect")
    async def disconnect(socket: Socket, reason: str) -> None:
        reasons.append(reason)
        gone.set()

    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.connect()
            await peer.send(packet)
            assert await peer.closed()
        with trio.fail_after(5):
            await gone.wait()
    assert ran == []
    assert reasons[0] in ("parse error", "invalid state")


async def test_binary_without_header_closes_the_connection() -> None:
    sio = SocketIOServer()
    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.connect()
            await peer.send(b"\x01\x02")
            assert await peer.closed()


async def test_server_cannot_emit_reserved_events() -> None:
    sio = SocketIOServer()
    with pytest.raises(ValueError):
        await sio.emit("disconnect")


async def test_mounted_next_to_a_websocket_route() -> None:
    sio = SocketIOServer()

    @sio.on("ping-me")
    async def ping_me(socket: Socket) -> str:
        return "pong"

    async def echo(ws: vt.WebSocketConnection) -> None:
        async for message in ws:
            await ws.send(message)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: vt.serve({"/ws": echo}, "127.0.0.1", 0, mounts={"/socket.io/": sio.app}, task_status=task_status)
            )
            async with vt.connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await ws.send("hi")
                assert await ws.receive() == "hi"
            async with raw(server.port) as peer:
                await peer.connect()
                await peer.send('21["ping-me"]')
                assert await peer.receive() == '31["pong"]'
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ handshake, scheduling paths


async def test_handshake_exposes_the_opening_request() -> None:
    sio = SocketIOServer()
    seen: list[vt.Handshake] = []

    @sio.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        seen.append(socket.handshake)

    async with running(sio) as port:
        target = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&room=blue"
        async with vt.connect(target, extra_headers=[("X-Token", "abc"), ("X-Multi", "1"), ("X-Multi", "2")]) as ws:
            assert str(await ws.receive()).startswith("0{")
            peer = Raw(ws)
            await peer.connect(auth={"user": "ann"})
    handshake = seen[0]
    assert handshake.headers["x-token"] == "abc"
    assert handshake.headers["x-multi"] == "1, 2"
    assert handshake.query["room"] == "blue" and handshake.query["EIO"] == "4"
    assert handshake.address == "127.0.0.1"
    assert handshake.secure is False and handshake.xdomain is False
    assert handshake.auth == {"user": "ann"}
    assert handshake.issued > 0 and handshake.time.endswith("GMT")
    assert handshake.method == "GET" and handshake.path == "/socket.io/"
    assert handshake.url.startswith("/socket.io/?EIO=4")
    environ = handshake.environ
    assert environ["HTTP_X_TOKEN"] == "abc"
    assert "room=blue" in environ["QUERY_STRING"]
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["wsgi.url_scheme"] == "http"


async def test_events_queued_behind_a_waiting_handler_keep_their_order() -> None:
    # A handler that waits (here for the client's ack) hands reading to a helper: events
    # arriving meanwhile are queued, acks are still read, and once it returns the queue
    # drains in order and the connection goes back to running handlers as they arrive.
    sio = SocketIOServer()
    log: list[str] = []

    @sio.on("ask")
    async def ask(socket: Socket, value: int) -> Any:
        log.append("ask")
        answer = await socket.call("question", value)
        log.append("answered")
        return answer

    @sio.on("fast")
    async def fast(socket: Socket, tag: int) -> int:
        log.append(f"fast{tag}")
        return tag

    @sio.on("yielding")
    async def yielding(socket: Socket, tag: int) -> int:
        await trio.sleep(0)  # every such event hands reading over and back
        log.append(f"yield{tag}")
        return tag

    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.connect()
            await peer.send('21["ask",5]')
            question = await peer.receive()
            assert isinstance(question, str) and question.startswith("2")
            ack_id = question[1 : question.index("[")]
            assert json.loads(question[len(ack_id) + 1 :]) == ["question", 5]
            for i in range(3):
                await peer.send(f'2{10 + i}["fast",{i}]')
            await peer.send(f"3{ack_id}[50]")
            assert await peer.receive() == "31[50]"
            for i in range(3):
                assert await peer.receive() == f"3{10 + i}[{i}]"
            for i in range(20):
                await peer.send(f'2{100 + i}["{"yielding" if i % 2 else "fast"}",{i}]')
            for i in range(20):
                assert await peer.receive() == f"3{100 + i}[{i}]"
    assert log == ["ask", "answered", "fast0", "fast1", "fast2"] + [
        f"yield{i}" if i % 2 else f"fast{i}" for i in range(20)
    ]


async def test_server_side_disconnect_of_an_idle_connection_runs_its_handler() -> None:
    # The connection's task waits for the peer; the disconnect handler still runs at once
    # (a helper runs the queue), and the connection's other namespace keeps working.
    sio = SocketIOServer()
    reasons: list[str] = []
    done = trio.Event()
    sio.of("/b").on("ping", lambda socket: "pong")

    @sio.on("disconnect")
    async def disconnect(socket: Socket, reason: str) -> None:
        reasons.append(reason)
        done.set()

    async with running(sio) as port:
        async with raw(port) as peer:
            sid = await peer.connect()
            await peer.connect("/b")
            await sio.disconnect(sid)
            with trio.fail_after(5):
                await done.wait()
            assert await peer.receive() == "1"
            await peer.send('2/b,7["ping"]')
            assert await peer.receive() == '3/b,7["pong"]'
    assert reasons == ["server namespace disconnect"]
