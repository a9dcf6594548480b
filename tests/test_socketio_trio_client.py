"""volleyio.trio.SocketIOClient against the official Node ``socket.io`` 4.8 server
(tests/js/sio_server.js; ``interop``), over polling only, WebSocket only and polling
upgraded to WebSocket; and against scripted servers on volleyio's own Engine.IO server
(protocol violations, timeouts, giving up reconnection)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import JS_DIR, TEST_TIMEOUT, node_path, require_peer

interop = pytest.mark.interop

MODES: dict[str, dict[str, Any]] = {
    "polling": {"transports": ("polling",)},
    "websocket": {"transports": ("websocket",)},
    "upgrade": {"transports": ("polling", "websocket")},
}


def socketio_available() -> bool:
    return node_path() is not None and (JS_DIR / "node_modules" / "socket.io").is_dir()


class NodeSocketIO:
    """tests/js/sio_server.js in a subprocess (ended by PID when the module is done)."""

    def __init__(self, mode: str, tmp: Path) -> None:
        node = node_path()
        assert node is not None
        options = {"transports": list(MODES[mode]["transports"]), "pingInterval": 300, "pingTimeout": 2000}
        self.mode = mode
        self.log_path = tmp / f"sio_server_{mode}.log"
        self._log = open(self.log_path, "w")  # a file, not a pipe: nobody has to drain it
        self.process = subprocess.Popen(
            [node, "sio_server.js", json.dumps(options)], cwd=str(JS_DIR),
            stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while True:
            text = self.log_path.read_text()
            if text.endswith("\n"):
                self.port = int(json.loads(text.splitlines()[0])["port"])
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"sio_server.js did not start: {text[-2000:]}")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # by PID
        self.process.wait(10)
        if self.process.stdin is not None:
            self.process.stdin.close()
        self._log.close()


@pytest.fixture(scope="module", params=list(MODES))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSocketIO]:
    require_peer(socketio_available(), "node with tests/js/node_modules/socket.io (run npm ci in tests/js)")
    node = NodeSocketIO(request.param, tmp_path_factory.mktemp("sio"))
    try:
        yield node
    finally:
        node.stop()


def client_for(server: NodeSocketIO, **options: Any) -> vt.SocketIOClient:
    options.setdefault("reconnection_delay", 0.05)
    options.setdefault("reconnection_delay_max", 0.2)
    return vt.SocketIOClient(server.url, **MODES[server.mode], **options)


async def settle_transport(client: vt.SocketIOClient, server: NodeSocketIO) -> None:
    if server.mode == "upgrade":
        assert client.engineio is not None
        await client.engineio.wait_upgraded()


def expected_transport(server: NodeSocketIO) -> str:
    return "polling" if server.mode == "polling" else "websocket"


def key() -> str:
    return uuid.uuid4().hex


# ----------------------------------------------------------------------------- connect


@interop
async def test_connect_with_auth(server: NodeSocketIO) -> None:
    welcome: list[Any] = []
    connected: list[str | None] = []
    calls: list[str] = []

    def auth(namespace: str) -> dict[str, Any]:
        calls.append(namespace)
        return {"token": "good", "nsp": namespace}

    client = client_for(server, auth=auth)
    client.on("welcome", handler=welcome.append)
    client.on("connect", handler=lambda: connected.append(client.sid()))
    with trio.fail_after(TEST_TIMEOUT):
        async with client:
            await settle_transport(client, server)
            assert client.transport == expected_transport(server)
            me = await client.call("whoami")
            assert me["sid"] == client.sid() and me["sid"] != me["eio"]
            assert me["auth"] == {"token": "good", "nsp": "/"}
            assert me["transport"] == expected_transport(server)
            while not welcome:
                await trio.sleep(0.01)
    assert welcome == [{"sid": me["sid"], "nsp": "/", "auth": {"token": "good", "nsp": "/"}}]
    assert connected == [me["sid"]]
    assert calls == ["/"]
    assert client.closed and client.close_reason == "io client disconnect"


@interop
async def test_auth_refused_with_message_and_data(server: NodeSocketIO) -> None:
    errors: list[vt.SocketIOConnectError] = []
    client = client_for(server, auth={"token": "bad"})
    client.on("connect_error", handler=errors.append)
    with trio.fail_after(TEST_TIMEOUT):
        with pytest.raises(vt.SocketIOConnectError) as info:
            async with client:
                pytest.fail("connected although refused")
    assert info.value.message == "not authorized"
    assert info.value.data == {"code": 4001, "why": "bad token"}
    assert info.value.namespace == "/"
    assert [e.message for e in errors] == ["not authorized"]
    assert client.closed


@interop
async def test_unknown_namespace_is_refused(server: NodeSocketIO) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        with pytest.raises(vt.SocketIOConnectError) as info:
            async with vt.connect_socketio(server.url, namespaces=("/", "/nowhere"), **MODES[server.mode]):
                pytest.fail("connected to an unknown namespace")
    assert info.value.namespace == "/nowhere"
    assert info.value.message == "Invalid namespace"
    assert info.value.data is None


@interop
async def test_two_namespaces_on_one_connection(server: NodeSocketIO) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with vt.connect_socketio(server.url, namespaces=("/", "/admin"), auth={"token": "t"},
                                       **MODES[server.mode]) as client:
            main = await client.call("whoami")
            admin = await client.call("whoami", namespace="/admin")
            assert main["eio"] == admin["eio"]
            assert main["sid"] != admin["sid"]
            assert (main["nsp"], admin["nsp"]) == ("/", "/admin")
            assert admin["sid"] == client.sid("/admin")
            await client.disconnect("/admin")
            assert not client.closed and client.namespaces == ["/"]
            with pytest.raises(vt.SocketIODisconnectedError) as info:
                await client.emit("echo", namespace="/admin")
            assert info.value.reason == "io client disconnect"
            reasons = await client.call("reasons")  # "/" still works on the same connection
            assert reasons[admin["sid"]] == "client namespace disconnect"
            assert (await client.call("whoami"))["eio"] == main["eio"]


# ----------------------------------------------------------------------------- events, acks, binary


@interop
async def test_emit_with_ack_both_directions(server: NodeSocketIO) -> None:
    client = client_for(server)
    echoed: list[tuple[Any, ...]] = []

    @client.on("question")
    async def question(i: int, payload: Any) -> Any:
        await trio.sleep(0)
        return (i, payload) if i % 2 else {"answer": i, "payload": payload}

    client.on("echoed", handler=lambda *args: echoed.append(args))
    with trio.fail_after(TEST_TIMEOUT):
        async with client:
            assert await client.call("echo") is None
            assert await client.call("echo", "one") == "one"
            assert await client.call("echo", 1, [2], {"3": None}) == (1, [2], {"3": None})
            assert await client.call("echo-event", "a", 2) is True
            answers = await client.call("ask", 4, "p")
            assert answers == [{"answer": 0, "payload": "p"}, 1, {"answer": 2, "payload": "p"}, 3]
            # the server acks with only the first argument of a multi-value answer (JS callbacks)
            while not echoed:
                await trio.sleep(0.01)
    assert echoed == [("a", 2)]


@interop
async def test_binary_payloads_with_several_attachments(server: NodeSocketIO) -> None:
    client = client_for(server)
    echoed: list[tuple[Any, ...]] = []
    blobs = [bytes([i]) * (i * 1000 + 1) for i in range(4)]

    @client.on("question")
    def question(i: int, payload: Any) -> Any:
        return {"i": i, "back": payload["blob"][::-1], "more": [b"\x00", b"\xff"]}

    client.on("echoed", handler=lambda *args: echoed.append(args))
    with trio.fail_after(TEST_TIMEOUT):
        async with client:
            await settle_transport(client, server)
            result = await client.call("echo", blobs[0], {"nested": [blobs[1], {"deep": blobs[2]}]}, "text", blobs[3])
            assert result == (blobs[0], {"nested": [blobs[1], {"deep": blobs[2]}]}, "text", blobs[3])
            assert await client.call("echo-event", b"\x01\x02", [b"", b"\x03"]) is True
            answers = await client.call("ask", 3, {"blob": b"abc"})
            assert answers == [{"i": i, "back": b"cba", "more": [b"\x00", b"\xff"]} for i in range(3)]
            while not echoed:
                await trio.sleep(0.01)
    assert echoed == [(b"\x01\x02", [b"", b"\x03"])]


@interop
async def test_many_acks_in_flight(server: NodeSocketIO) -> None:
    client = client_for(server)
    results: dict[int, Any] = {}

    @client.on("question")
    async def question(i: int, payload: str) -> str:
        return f"{payload}-{i}"

    async def one(i: int) -> None:
        results[i] = await client.call("echo", i, {"i": i})

    with trio.fail_after(TEST_TIMEOUT):
        async with client:
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
            answers = await client.call("ask", 200, "q")
    assert results == {i: (i, {"i": i}) for i in range(200)}
    assert answers == [f"q-{i}" for i in range(200)]


# ----------------------------------------------------------------------------- rooms


@interop
async def test_rooms_broadcast_and_member_counts(server: NodeSocketIO) -> None:
    room = key()
    received: dict[int, list[Any]] = {0: [], 1: [], 2: []}
    kicked = trio.Event()
    clients = [client_for(server) for _ in range(3)]
    for index, client in enumerate(clients):
        client.on("bcast", handler=lambda *args, index=index: received[index].append(args))
    clients[1].on("disconnect", handler=lambda reason: kicked.set())
    with trio.fail_after(TEST_TIMEOUT):
        async with clients[0] as a, clients[1] as b, clients[2] as c:
            assert await a.call("join", room) == 1
            assert await b.call("join", room) == 2
            assert await c.call("join", room) == 3
            assert await a.call("broadcast", room, "hello", b"\x07") is True
            while not all(received.values()):
                await trio.sleep(0.01)
            assert await b.call("kick-me") == "bye"
            await kicked.wait()
            await c.disconnect()
            assert await a.call("room-size", room) == 1
            assert await a.call("leave", room) == 0
    assert all(messages == [("hello", b"\x07")] for messages in received.values())


# ----------------------------------------------------------------------------- disconnect


@interop
async def test_server_side_disconnect_is_final(server: NodeSocketIO) -> None:
    reasons: list[str] = []
    client = client_for(server)
    client.on("disconnect", handler=reasons.append)
    with trio.fail_after(TEST_TIMEOUT):
        async with client:
            sid = client.sid()
            assert await client.call("kick-me") == "bye"
            await client.wait_closed()
            assert client.close_reason == "io server disconnect"
            with pytest.raises(vt.SocketIODisconnectedError) as info:
                await client.emit("echo")
            assert info.value.reason == "io server disconnect"
    assert reasons == ["io server disconnect"]
    assert client.connections == 1  # no reconnection after "io server disconnect"
    async with client_for(server) as other:
        assert (await other.call("reasons"))[sid] == "server namespace disconnect"


@interop
async def test_server_disconnects_one_of_two_namespaces(server: NodeSocketIO) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with vt.connect_socketio(server.url, namespaces=("/", "/admin"), **MODES[server.mode]) as client:
            assert await client.call("kick-me", namespace="/admin") == "bye"
            while client.is_connected("/admin"):
                await trio.sleep(0.01)
            assert client.namespaces == ["/"] and not client.closed
            assert await client.call("echo", 5) == 5


@interop
async def test_client_side_disconnect(server: NodeSocketIO) -> None:
    reasons: list[str] = []
    client = client_for(server, namespaces=("/", "/admin"))
    client.on("disconnect", handler=reasons.append)
    with trio.fail_after(TEST_TIMEOUT):
        async with client:
            sid = client.sid()
            await client.disconnect()
            assert client.closed and client.transport is None
            with pytest.raises(vt.SocketIODisconnectedError):
                await client.call("echo")
            await client.wait_closed()
        async with client_for(server) as other:
            assert (await other.call("reasons"))[sid] == "client namespace disconnect"
    assert reasons == ["io client disconnect"]


@interop
async def test_pending_call_fails_when_the_transport_dies(server: NodeSocketIO) -> None:
    client = client_for(server, reconnection=False)
    failures: list[vt.SocketIODisconnectedError] = []

    async def never_acked() -> None:
        try:
            await client.call("record", key(), "x")  # "record" never acks
        except vt.SocketIODisconnectedError as exc:
            failures.append(exc)

    with trio.fail_after(TEST_TIMEOUT):
        async with client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(never_acked)
                await trio.sleep(0.1)
                assert await client.call("kill-transport") == "ok"
            await client.wait_closed()
    assert [f.reason for f in failures] == ["transport close"]
    assert client.close_reason == "transport close"


@interop
async def test_cancelled_call_drops_its_pending_entry(server: NodeSocketIO) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with vt.connect_socketio(server.url, **MODES[server.mode]) as client:
            with trio.move_on_after(0.2) as scope:
                await client.call("record", key(), "never acked")
            assert scope.cancelled_caught
            assert client._pending == {}
            assert await client.call("echo", "still fine") == "still fine"


# ----------------------------------------------------------------------------- reconnect


@interop
async def test_reconnect_delivers_buffered_emits_in_order(server: NodeSocketIO) -> None:
    tokens: list[int] = []
    events: list[str] = []
    lost = trio.Event()
    back = trio.Event()

    def auth() -> dict[str, Any]:
        tokens.append(len(tokens))
        return {"token": f"t{len(tokens)}"}

    client = client_for(server, namespaces=("/", "/admin"), auth=auth)

    def on_disconnect(reason: str) -> None:
        events.append(reason)
        lost.set()

    def on_connect() -> None:
        events.append("connect")
        if client.connections > 1:
            back.set()

    client.on("disconnect", handler=on_disconnect)
    client.on("connect", handler=on_connect)
    name = key()
    with trio.fail_after(TEST_TIMEOUT):
        async with client:
            first = await client.call("whoami")
            await client.emit("record", name, -1)
            assert await client.call("kill-transport") == "ok"
            await lost.wait()
            assert not client.is_connected()
            for i in range(50):
                await client.emit("record", name, i)
            await client.emit("record", name, "volatile", volatile=True)  # dropped, not buffered
            async with trio.open_nursery() as nursery:
                results: list[Any] = []

                async def buffered_call() -> None:
                    results.append(await client.call("echo", "buffered", namespace="/admin"))

                nursery.start_soon(buffered_call)
                await back.wait()
            assert results == ["buffered"]
            second = await client.call("whoami")
            assert await client.call("records", name) == [-1, *range(50)]
    assert second["sid"] != first["sid"] and second["eio"] != first["eio"]
    # auth is evaluated for every CONNECT: "/" then "/admin", on each connection
    assert first["auth"] == {"token": "t1"} and second["auth"] == {"token": "t3"}
    assert len(tokens) == 4
    assert client.connections == 2
    assert events[:3] == ["connect", "transport close", "connect"]


@interop
async def test_send_buffer_limit_while_reconnecting(server: NodeSocketIO) -> None:
    lost = trio.Event()
    back = trio.Event()
    client = client_for(server, buffer_limit=5, reconnection_delay=0.3, reconnection_delay_max=0.3,
                        randomization_factor=0.0)
    client.on("disconnect", handler=lambda reason: lost.set())
    client.on("connect", handler=lambda: back.set() if client.connections > 1 else None)
    name = key()
    with trio.fail_after(TEST_TIMEOUT):
        async with client:
            assert await client.call("kill-transport") == "ok"
            await lost.wait()
            for i in range(5):
                await client.emit("record", name, i)
            with pytest.raises(vt.SendBufferFullError) as info:
                await client.emit("record", name, "overflow")
            assert info.value.limit == 5
            await client.emit("record", name, "volatile", volatile=True)  # dropped, no error
            await back.wait()
            assert await client.call("records", name) == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- scripted servers
# volleyio's Engine.IO server with a handler that plays the Socket.IO server by hand,
# so the tests can send what no real server sends.

Script = Callable[[vt.EngineIOSession, int], Awaitable[None]]


async def start_scripted(nursery: trio.Nursery, script: Script) -> str:
    sessions = 0

    async def handler(session: vt.EngineIOSession) -> None:
        nonlocal sessions
        sessions += 1
        await script(session, sessions - 1)

    server: vt.WebSocketServer = await nursery.start(
        partial(vt.serve_engineio, handler, "127.0.0.1", 0, path="/socket.io/")
    )
    return f"http://127.0.0.1:{server.port}"


async def accept(session: vt.EngineIOSession, sid: str) -> Any:
    """Answer the first CONNECT of the main namespace; returns its auth payload."""
    message = await session.receive()
    assert isinstance(message, str) and message.startswith("0")
    await session.send(json.dumps({"sid": sid}).join(["0", ""]))
    return json.loads(message[1:]) if len(message) > 1 else None


async def echo_events(session: vt.EngineIOSession) -> None:
    """Answer every ``2<id>["event", ...args]`` with ``3<id>[...args]`` (text only)."""
    async for message in session:
        assert isinstance(message, str)
        if message.startswith("2") and message[1].isdigit():
            ack_id, _, rest = message[1:].partition("[")
            args = json.loads("[" + rest)[1:]
            await session.send(f"3{ack_id}{json.dumps(args)}")


async def test_malformed_packet_closes_and_reconnects() -> None:
    closed_reasons: list[str | None] = []
    reasons: list[str] = []
    back = trio.Event()

    async def script(session: vt.EngineIOSession, index: int) -> None:
        await accept(session, f"s{index}")
        if index == 0:
            await session.send("2abc")  # not JSON: the client must close the connection
            await session.wait_closed()
            closed_reasons.append(session.disconnect_reason)
            return
        await echo_events(session)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await start_scripted(nursery, script)
            client = vt.SocketIOClient(url, reconnection_delay=0.05)
            client.on("disconnect", handler=reasons.append)
            client.on("connect", handler=lambda: back.set() if client.connections > 1 else None)
            async with client:
                await back.wait()
                assert client.sid() == "s1"
                assert await client.call("echo", 1, "two") == (1, "two")
            nursery.cancel_scope.cancel()
    assert reasons[0] == "parse error"
    assert closed_reasons == ["client close"]  # the client closed the session ("1")


async def test_connect_answer_without_sid_is_refused() -> None:
    async def script(session: vt.EngineIOSession, index: int) -> None:
        await session.receive()
        await session.send("0")  # a v2-style answer
        await session.wait_closed()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await start_scripted(nursery, script)
            with pytest.raises(vt.SocketIOConnectError) as info:
                async with vt.connect_socketio(url):
                    pytest.fail("connected without a socket id")
            nursery.cancel_scope.cancel()
    assert "v2.x" in info.value.message


async def test_unanswered_connect_times_out() -> None:
    async def script(session: vt.EngineIOSession, index: int) -> None:
        await session.wait_closed()  # never answers the CONNECT

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await start_scripted(nursery, script)
            with pytest.raises(vt.SocketIOConnectError, match="timed out") as info:
                async with vt.connect_socketio(url, connect_timeout=0.3, reconnection=False):
                    pytest.fail("connected without an answer")
            nursery.cancel_scope.cancel()
    assert not info.value.refused and isinstance(info.value.__cause__, vt.ConnectError)


async def test_initial_connection_failure_raises_the_socketio_error() -> None:
    errors: list[vt.SocketIOConnectError] = []
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        client = vt.SocketIOClient(f"http://127.0.0.1:{port}", reconnection=False)
        client.on("connect_error", handler=errors.append)
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(vt.SocketIOConnectError) as info:
                async with client:
                    pytest.fail("connected to nothing")
    assert not info.value.refused and f"127.0.0.1:{port}" in str(info.value)
    assert isinstance(info.value.__cause__, vt.ConnectError)  # the transport's error, chained
    assert errors == [info.value]


async def test_initial_connection_retried_until_attempts_run_out() -> None:
    errors: list[vt.SocketIOConnectError] = []
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        client = vt.SocketIOClient(
            f"http://127.0.0.1:{port}", reconnection_attempts=2, reconnection_delay=0.05,
            reconnection_delay_max=0.1,
        )
        client.on("connect_error", handler=errors.append)
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(vt.SocketIOConnectError):
                async with client:
                    pytest.fail("connected to nothing")
    assert len(errors) == 3  # the first attempt and two retries, as the JS client counts


async def test_initial_connection_retried_until_the_server_is_up() -> None:
    errors: list[vt.SocketIOConnectError] = []

    async def script(session: vt.EngineIOSession, index: int) -> None:
        await accept(session, "late")
        await echo_events(session)

    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def start_later() -> None:
                while not errors:  # down at the first attempt
                    await trio.sleep(0.01)
                await nursery.start(
                    partial(vt.serve_engineio, partial(script, index=0), "127.0.0.1", port, path="/socket.io/")
                )

            nursery.start_soon(start_later)
            client = vt.SocketIOClient(f"http://127.0.0.1:{port}", reconnection_delay=0.2, reconnection_delay_max=0.4)
            client.on("connect_error", handler=errors.append)
            async with client:
                assert client.sid("/") == "late"
                assert await client.call("echo", 1) == 1
            nursery.cancel_scope.cancel()
    assert errors and all(not e.refused for e in errors)


async def test_gives_up_after_reconnection_attempts() -> None:
    reasons: list[str] = []
    failures: list[str] = []

    async def script(session: vt.EngineIOSession, index: int) -> None:
        await accept(session, "only")
        await echo_events(session)

    async def buffered_call(client: vt.SocketIOClient) -> None:
        try:
            await client.call("echo", "never sent")
        except vt.SocketIODisconnectedError as exc:
            failures.append(exc.reason)

    with trio.fail_after(TEST_TIMEOUT):
        client = vt.SocketIOClient("http://127.0.0.1:1", reconnection_attempts=2, reconnection_delay=0.05,
                                   reconnection_delay_max=0.1)
        client.on("disconnect", handler=reasons.append)
        async with trio.open_nursery() as nursery:
            server_scope = trio.CancelScope()

            async def run_server(task_status: trio.TaskStatus[str]) -> None:
                with server_scope:
                    async with trio.open_nursery() as inner:
                        task_status.started(await start_scripted(inner, script))

            client.url = await nursery.start(run_server)
            async with client:
                assert await client.call("echo", "x") == "x"
                server_scope.cancel()  # the server goes away for good
                while client.is_connected():
                    await trio.sleep(0.01)
                async with trio.open_nursery() as calls:
                    calls.start_soon(buffered_call, client)
                    await client.wait_closed()
    assert client.close_reason == "reconnect failed"
    assert failures == ["reconnect failed"]
    assert len(reasons) == 1 and reasons[0] in ("transport close", "transport error")
    with pytest.raises(vt.SocketIODisconnectedError):
        await client.emit("late")


async def test_handler_errors_do_not_end_the_client() -> None:
    got: list[Any] = []

    async def script(session: vt.EngineIOSession, index: int) -> None:
        await accept(session, "s")
        await session.send('20["boom",1]')  # a sync handler that raises: no ack
        await session.send('21["aboom",2]')  # an async one
        await session.send('22["fine",3]')
        async for message in session:
            got.append(message)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await start_scripted(nursery, script)
            client = vt.SocketIOClient(url)

            @client.on("boom")
            def boom(n: int) -> None:
                raise RuntimeError("sync handler failure")

            @client.on("aboom")
            async def aboom(n: int) -> None:
                raise RuntimeError("async handler failure")

            @client.on("fine")
            async def fine(n: int) -> tuple[int, str]:
                return n, "ok"

            async with client:
                while not got:
                    await trio.sleep(0.01)
                assert got == ['32[3,"ok"]']
                assert client.is_connected()
            nursery.cancel_scope.cancel()


async def test_exception_in_the_body_is_not_wrapped() -> None:
    async def script(session: vt.EngineIOSession, index: int) -> None:
        await accept(session, "s")
        await session.wait_closed()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await start_scripted(nursery, script)
            with pytest.raises(KeyError):
                async with vt.connect_socketio(url):
                    raise KeyError("body")
            nursery.cancel_scope.cancel()


async def test_catch_all_handler_and_connect_namespace() -> None:
    got: list[tuple[Any, ...]] = []

    async def script(session: vt.EngineIOSession, index: int) -> None:
        await accept(session, "main")
        async for message in session:
            assert isinstance(message, str)
            if message.startswith("0/chat,"):
                await session.send('0/chat,{"sid":"c1"}')
                await session.send('2/chat,["news",{"n":1}]')
            elif message.startswith("0/nope,"):
                await session.send('4/nope,{"message":"Invalid namespace"}')

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await start_scripted(nursery, script)
            async with vt.connect_socketio(url) as client:
                client.on("*", namespace="/chat", handler=lambda *args: got.append(args))
                await client.connect_namespace("/chat")
                assert client.sid("/chat") == "c1"
                assert client.namespaces == ["/", "/chat"]
                with pytest.raises(vt.SocketIOConnectError) as info:
                    await client.connect_namespace("/nope")
                assert info.value.message == "Invalid namespace"
                while not got:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert got == [("news", {"n": 1})]


@pytest.mark.parametrize("transports", [("polling",), ("websocket",)])
async def test_cancelled_from_outside_still_closes_gracefully(transports: tuple[str, ...]) -> None:
    reasons: list[str | None] = []
    got: list[str | bytes] = []

    async def script(session: vt.EngineIOSession, index: int) -> None:
        await accept(session, "s")
        async for message in session:
            got.append(message)
        reasons.append(session.disconnect_reason)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await start_scripted(nursery, script)
            with trio.CancelScope() as scope:
                async with vt.connect_socketio(url, transports=transports, close_timeout=TEST_TIMEOUT):
                    scope.cancel()
                    await trio.sleep_forever()
            while not reasons:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert got == ["1"]  # the namespace was left (41) ...
    assert reasons == ["client close"]  # ... and Engine.IO closed with its handshake


# ----------------------------------------------------------------------------- our own server
# volleyio's SocketIOServer (volleyio.trio._socketio_server) as the peer.

OUR_MODES = list(MODES)


async def start_ours(nursery: trio.Nursery, mode: str) -> tuple[Any, str]:
    from volleyio.socketio.server import ConnectionRefusedError
    from volleyio.trio._socketio_server import SocketIOServer, Socket

    sio = SocketIOServer(transports=MODES[mode]["transports"], ping_interval=0.3, ping_timeout=2.0)
    records: dict[str, list[Any]] = {}

    async def connect(socket: Socket, auth: Any) -> None:
        if (auth or {}).get("token") == "bad":
            raise ConnectionRefusedError("not authorized", {"code": 4001})

    async def echo(socket: Socket, *args: Any) -> Any:
        return tuple(args)

    async def ask(socket: Socket, n: int, payload: Any) -> Any:
        answers: list[Any] = []

        async def one(i: int) -> None:
            answers.append((i, await socket.call("question", i, payload)))

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        return [answer for _, answer in sorted(answers, key=lambda item: item[0])]

    async def record(socket: Socket, key: str, value: Any) -> None:
        records.setdefault(key, []).append(value)

    async def get_records(socket: Socket, key: str) -> Any:
        return records.get(key, [])

    async def join(socket: Socket, room: str) -> int:
        await socket.join(room)
        return len(socket.nsp.members(room))

    async def room_size(socket: Socket, room: str) -> int:
        return len(socket.nsp.members(room))

    async def broadcast(socket: Socket, room: str, *args: Any) -> bool:
        await sio.emit("bcast", *args, to=room, namespace=socket.namespace)
        return True

    async def kick_me(socket: Socket) -> str:
        sio.start_background_task(socket.disconnect)
        return "bye"

    async def kill_transport(socket: Socket) -> str:
        session = sio.engineio.session(socket.eio_sid)

        async def close_later() -> None:
            await trio.sleep(0.02)
            if session is not None:
                await session.close()

        sio.start_background_task(close_later)
        return "ok"

    async def whoami(socket: Socket) -> Any:
        return {"sid": socket.id, "eio": socket.eio_sid, "nsp": socket.namespace, "auth": socket.auth,
                "transport": socket.transport}

    for namespace in ("/", "/admin"):
        sio.of(namespace)
        for name, handler in [
            ("connect", connect), ("echo", echo), ("ask", ask), ("record", record), ("records", get_records),
            ("join", join), ("room-size", room_size), ("broadcast", broadcast), ("kick-me", kick_me),
            ("kill-transport", kill_transport), ("whoami", whoami),
        ]:
            sio.on(name, handler, namespace=namespace)
    server = await nursery.start(sio.serve, "127.0.0.1", 0)
    return sio, f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize("mode", OUR_MODES)
async def test_ours_connect_auth_and_refusal(mode: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, url = await start_ours(nursery, mode)
            with pytest.raises(vt.SocketIOConnectError) as info:
                async with vt.connect_socketio(url, auth={"token": "bad"}, **MODES[mode]):
                    pytest.fail("connected although refused")
            assert (info.value.message, info.value.data) == ("not authorized", {"code": 4001})
            with pytest.raises(vt.SocketIOConnectError) as unknown:
                async with vt.connect_socketio(url, namespaces=("/nowhere",), **MODES[mode]):
                    pytest.fail("connected to an unknown namespace")
            assert unknown.value.message == "Invalid namespace"
            async with vt.connect_socketio(url, namespaces=("/", "/admin"), auth={"token": "ok"},
                                           **MODES[mode]) as client:
                main = await client.call("whoami")
                admin = await client.call("whoami", namespace="/admin")
                assert main["sid"] == client.sid() and admin["sid"] == client.sid("/admin")
                assert main["eio"] == admin["eio"] and main["sid"] != admin["sid"]
                assert main["auth"] == {"token": "ok"}
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("mode", OUR_MODES)
async def test_ours_acks_binary_and_many_in_flight(mode: str) -> None:
    results: dict[int, Any] = {}
    client_handler_calls = 0

    async def one(client: vt.SocketIOClient, i: int) -> None:
        results[i] = await client.call("echo", i, bytes([i % 256]) * 3)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, url = await start_ours(nursery, mode)
            client = vt.SocketIOClient(url, **MODES[mode])

            @client.on("question")
            async def question(i: int, payload: Any) -> Any:
                nonlocal client_handler_calls
                client_handler_calls += 1
                if isinstance(payload, bytes):
                    return {"i": i, "blobs": [payload, payload[::-1]]}
                return f"{payload}-{i}"

            async with client:
                blobs = (b"\x00\x01", {"deep": [b"\x02", b"\x03" * 1000]}, b"")
                assert await client.call("echo", *blobs) == blobs
                async with trio.open_nursery() as calls:
                    for i in range(200):
                        calls.start_soon(one, client, i)
                answers = await client.call("ask", 50, "q")
                # 4 answers of 2 buffers: 8 attachments in the server's ack (the limit is 10)
                binary_answers = await client.call("ask", 4, b"xy")
            nursery.cancel_scope.cancel()
    assert results == {i: (i, bytes([i % 256]) * 3) for i in range(200)}
    assert answers == [f"q-{i}" for i in range(50)]
    assert binary_answers == [{"i": i, "blobs": [b"xy", b"yx"]} for i in range(4)]
    assert client_handler_calls == 54


@pytest.mark.parametrize("mode", OUR_MODES)
async def test_ours_rooms_and_disconnects(mode: str) -> None:
    received: list[tuple[Any, ...]] = []
    kicked: list[str] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, url = await start_ours(nursery, mode)
            a = vt.SocketIOClient(url, **MODES[mode])
            b = vt.SocketIOClient(url, namespaces=("/", "/admin"), **MODES[mode])
            a.on("bcast", handler=lambda *args: received.append(args))
            b.on("disconnect", "/admin", kicked.append)
            async with a, b, vt.connect_socketio(url, **MODES[mode]) as c:
                assert await a.call("join", "r") == 1
                assert await b.call("join", "r") == 2
                assert await c.call("join", "r") == 3
                assert await c.call("broadcast", "r", "hi", b"\x01") is True
                assert await b.call("kick-me", namespace="/admin") == "bye"
                await c.disconnect()
                while not (received and kicked):
                    await trio.sleep(0.01)
                assert await a.call("room-size", "r") == 2
                assert b.namespaces == ["/"] and not b.closed
            nursery.cancel_scope.cancel()
    assert received == [("hi", b"\x01")]
    assert kicked == ["io server disconnect"]


@pytest.mark.parametrize("mode", OUR_MODES)
async def test_ours_reconnect_delivers_buffered_emits(mode: str) -> None:
    lost = trio.Event()
    back = trio.Event()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, url = await start_ours(nursery, mode)
            client = vt.SocketIOClient(url, reconnection_delay=0.05, reconnection_delay_max=0.1, **MODES[mode])
            client.on("disconnect", handler=lambda reason: lost.set())
            client.on("connect", handler=lambda: back.set() if client.connections > 1 else None)
            async with client:
                first = client.sid()
                assert await client.call("kill-transport") == "ok"
                await lost.wait()
                for i in range(30):
                    await client.emit("record", "k", i)
                await back.wait()
                assert await client.call("records", "k") == list(range(30))
                assert client.sid() != first
            nursery.cancel_scope.cancel()


async def test_async_auth_callable_and_its_failure() -> None:
    seen: list[Any] = []

    async def script(session: vt.EngineIOSession, index: int) -> None:
        seen.append(await accept(session, "s"))
        await session.wait_closed()

    async def good_auth(namespace: str) -> dict[str, Any]:
        await trio.sleep(0)
        return {"nsp": namespace}

    def bad_auth() -> dict[str, Any]:
        raise LookupError("no token")

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await start_scripted(nursery, script)
            async with vt.connect_socketio(url, auth=good_auth):
                pass
            with pytest.raises(LookupError):
                async with vt.connect_socketio(url, auth=bad_auth):
                    pytest.fail("connected without auth")
            with pytest.raises(TypeError):
                async with vt.connect_socketio(url, auth=lambda: ["not", "a", "mapping"]):
                    pytest.fail("connected with a list as auth")
            nursery.cancel_scope.cancel()
    assert seen == [{"nsp": "/"}]
