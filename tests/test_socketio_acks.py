"""Acknowledgements, complete (issue 15, point 3): answering later through an ``Ack``
object, declining with ``NO_ACK``, results that keep ``[]`` apart from ``[null]``
(``as_list``), and the ``on_error`` hook. Sans-I/O units, raw wire tests, volleyio's own
client, and the real peers: socket.io-client 4.8 in Node (tests/js/sio_acks_client.js)
and python-socketio's AsyncClient (tests/peers/pys_acks_client.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import JS_DIR, node_path, require_peer
from volleyio.socketio import NO_ACK, AckError, ack_arguments, ack_result
from volleyio.socketio.client import ClientAckReceived, ClientEventReceived
from volleyio.socketio.client import SocketIOClient as ClientCore
from volleyio.socketio.server import AckReceived, EventReceived, NamespaceConfig, SocketIOConfig
from volleyio.socketio.server import SocketIOServer as ServerCore
from volleyio.trio import Ack, Socket, SocketIOServer

PEERS_DIR = Path(__file__).parent / "peers"
TIMEOUT = 30.0


# ---------------------------------------------------------------------------- sans-I/O


def test_ack_arguments_and_results() -> None:
    assert ack_arguments(None) == ()
    assert ack_arguments((None,)) == (None,)
    assert ack_arguments((1, "two")) == (1, "two")
    assert ack_arguments([1, 2]) == ([1, 2],)
    assert ack_arguments(0) == (0,)
    assert ack_arguments(NO_ACK) is None
    assert repr(NO_ACK) == "NO_ACK"
    assert ack_result([]) is None and ack_result([None]) is None
    assert ack_result([], as_list=True) == [] and ack_result([None], as_list=True) == [None]
    assert ack_result([1]) == 1 and ack_result([1, 2]) == (1, 2)
    assert ack_result([1, 2], as_list=True) == [1, 2]
    assert issubclass(AckError, vt.AckError) and issubclass(AckError, Exception)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, sid: str, data: Any, *, volatile: bool = False) -> bool:
        self.sent.append(data)
        return True

    def close(self, sid: str, now: float) -> None:
        pass


def test_server_core_keeps_empty_and_null_acks_apart() -> None:
    transport = Recorder()
    core = ServerCore(transport, SocketIOConfig(namespaces={"/": NamespaceConfig()}))
    core.engineio_connected("E", 0.0)
    core.engineio_message("E", "0", 0.0)
    sid = json.loads(transport.sent.pop()[1:])["sid"]
    core.take_events()
    # answers to the client's events: [] and [null] on the wire
    core.engineio_message("E", '25["q"]', 0.0)
    core.engineio_message("E", '26["q"]', 0.0)
    assert [e.ack_id for e in core.take_events() if isinstance(e, EventReceived)] == [5, 6]
    core.ack(sid, 5)
    core.ack(sid, 6, None)
    assert transport.sent[-2:] == ["35[]", "36[null]"]
    # the client's answers to the server's events keep the difference too
    first = core.emit(sid, "a", with_ack=True)
    second = core.emit(sid, "b", with_ack=True)
    core.engineio_message("E", f"3{first}[]", 0.0)
    core.engineio_message("E", f"3{second}[null]", 0.0)
    assert core.take_events() == [AckReceived(sid, "/", first or 0, []), AckReceived(sid, "/", second or 0, [None])]


def test_client_core_keeps_empty_and_null_acks_apart() -> None:
    core = ClientCore()
    core.add_namespace("/")
    core.engineio_opened()
    core.connect("/")
    core.receive('0{"sid":"S"}')
    core.data_to_send()
    assert core.emit("/", "q", ack=True) == 0
    assert core.emit("/", "q", ack=True) == 1
    assert core.receive("30[]") == [ClientAckReceived("/", 0, [])]
    assert core.receive("31[null]") == [ClientAckReceived("/", 1, [None])]
    assert core.receive('27["ask"]') == [ClientEventReceived("/", "S", "ask", [], 7)]
    core.data_to_send()
    core.ack("/", "S", 7)
    assert core.data_to_send() == ["37[]"]


def test_ack_object_answers_once() -> None:
    sent: list[tuple[Any, ...]] = []
    ack = Ack(sent.append)
    assert ack.requested and not ack.sent
    ack(None)
    assert sent == [(None,)] and ack.sent
    with pytest.raises(AckError):
        ack(1)
    assert sent == [(None,)]
    quiet = Ack(None)
    assert not quiet.requested
    quiet()  # nothing asked: nothing sent
    with pytest.raises(AckError):
        quiet()


def test_ack_not_marked_sent_when_encoding_fails() -> None:
    def refuse(args: tuple[Any, ...]) -> None:
        raise ValueError("NaN cannot be encoded")

    ack = Ack(refuse)
    with pytest.raises(ValueError):
        ack(float("nan"))
    assert not ack.sent


# ---------------------------------------------------------------------------- wire tests


@asynccontextmanager
async def running(sio: SocketIOServer) -> AsyncIterator[int]:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(sio.serve, "127.0.0.1", 0)
            yield server.port
            nursery.cancel_scope.cancel()


class Raw:
    """Socket.IO packets written by hand over an Engine.IO WebSocket."""

    def __init__(self, ws: vt.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, packet: str) -> None:
        await self.ws.send("4" + packet)

    async def receive(self) -> str:
        while True:
            message = await self.ws.receive()
            assert isinstance(message, str)
            if message == "2":
                await self.ws.send("3")
                continue
            assert message.startswith("4"), message
            return message[1:]

    async def connect(self) -> str:
        await self.send("0")
        reply = await self.receive()
        sid: str = json.loads(reply[1:])["sid"]
        return sid


@asynccontextmanager
async def raw(port: int) -> AsyncIterator[Raw]:
    async with vt.connect(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket") as ws:
        assert str(await ws.receive()).startswith("0{")
        yield Raw(ws)


async def test_ack_from_another_task_and_twice_is_an_error() -> None:
    sio = SocketIOServer()
    kept: list[Ack] = []
    errors: list[BaseException] = []

    @sio.on("later")
    async def later(socket: Socket, n: int, *, ack: Ack) -> None:
        kept.append(ack)

    @sio.on("release")
    async def release(socket: Socket) -> str:
        async def answer(ack: Ack) -> None:
            await trio.sleep(0.05)
            ack("done", None)
            try:
                ack("again")
            except AckError as exc:
                errors.append(exc)

        for ack in kept:
            sio.start_background_task(answer, ack)
        return "released"

    async with running(sio) as port, raw(port) as peer:
        await peer.connect()
        await peer.send('21["later",1]')
        await peer.send('22["later",2]')
        await peer.send('2["later",3]')  # no ack asked: the Ack is not requested
        await peer.send('23["release"]')
        assert await peer.receive() == '33["released"]'  # the handlers returned without answering
        answers = {await peer.receive(), await peer.receive()}
        assert answers == {'31["done",null]', '32["done",null]'}
        assert [ack.requested for ack in kept] == [True, True, False]
        assert all(ack.sent for ack in kept)
        assert len(errors) == 3


async def test_no_ack_declines_and_an_unanswered_ack_sends_nothing() -> None:
    sio = SocketIOServer()

    @sio.on("decline")
    async def decline(socket: Socket) -> Any:
        return NO_ACK

    @sio.on("silent")
    def silent(socket: Socket, *, ack: Ack) -> None:
        pass  # never answers

    @sio.on("*")
    async def anything(socket: Socket, event: str, *args: Any) -> Any:
        return NO_ACK if event == "shh" else (event, *args)

    @sio.on("empty")
    async def empty(socket: Socket) -> None:
        return None

    @sio.on("null")
    async def null(socket: Socket) -> tuple[None]:
        return (None,)

    async with running(sio) as port, raw(port) as peer:
        await peer.connect()
        for packet in ('21["decline"]', '22["silent"]', '23["shh"]', '24["empty"]', '25["null"]', '26["other",1]'):
            await peer.send(packet)
        assert await peer.receive() == "34[]"
        assert await peer.receive() == "35[null]"
        assert await peer.receive() == '36["other",1]'


async def test_catch_all_handler_can_take_ack() -> None:
    sio = SocketIOServer()

    @sio.on("*")
    async def anything(socket: Socket, event: str, *args: Any, ack: Ack) -> None:
        ack(event, len(args))

    async with running(sio) as port, raw(port) as peer:
        await peer.connect()
        await peer.send('29["x",1,2]')
        assert await peer.receive() == '39["x",2]'


async def test_call_and_gather_as_list_keep_empty_and_null_apart() -> None:
    sio = SocketIOServer()
    results: dict[str, Any] = {}

    @sio.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        await socket.join("room")

    async with running(sio) as port, raw(port) as a, raw(port) as b:
        sid_a = await a.connect()
        await b.connect()

        async def server_side() -> None:
            socket = sio.get_socket(sid_a)
            assert socket is not None
            results["plain"] = await socket.call("q")
            results["list"] = await socket.call("q", as_list=True)
            results["sio"] = await sio.call("q", to=sid_a, as_list=True)
            results["gather"] = await sio.gather("g", to="room", timeout=5, as_list=True)
            results["gather_plain"] = await sio.gather("g", to="room", timeout=5)

        async def answer(peer: Raw, gathered: str) -> None:
            for _ in range(2):
                packet = await peer.receive()
                ack_id = packet[1:packet.index("[")]
                await peer.send(f"3{ack_id}{gathered}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_side)
            for body in ("[null]", "[null]", "[]"):
                packet = await a.receive()
                assert packet.startswith("2") and '"q"' in packet, packet
                await a.send(f"3{packet[1:packet.index('[')]}{body}")
            nursery.start_soon(answer, b, "[]")
            await answer(a, "[null]")
        assert results["plain"] is None
        assert results["list"] == [None]
        assert results["sio"] == []
        assert sorted(results["gather"].values(), key=len) == [[], [None]]
        assert list(results["gather_plain"].values()) == [None, None]
    assert sio.ack_latency.count == 7  # 3 calls + 2 x 2 gathered answers


async def test_on_error_sees_socket_event_and_exception() -> None:
    seen: list[tuple[str, str, str]] = []

    async def hook(socket: Socket, event: str, exc: Exception) -> None:
        seen.append((socket.namespace, event, repr(exc)))

    sio = SocketIOServer(on_error=hook)

    @sio.on("boom")
    async def boom(socket: Socket) -> None:
        raise RuntimeError("handler bug")

    @sio.on("late")
    async def late(socket: Socket, *, ack: Ack) -> None:
        raise KeyError("before answering")

    @sio.on("echo")
    async def echo(socket: Socket, value: Any) -> Any:
        return value

    @sio.of("/other").on("connect")
    async def bad_connect(socket: Socket, auth: Any) -> None:
        raise ValueError("connect bug")

    @sio.on("disconnect")
    async def bad_disconnect(socket: Socket, reason: str) -> None:
        raise LookupError(reason)

    async with running(sio) as port:
        async with raw(port) as peer:
            await peer.connect()
            await peer.send('21["boom"]')
            await peer.send('22["late"]')
            await peer.send('23["echo",3]')
            assert await peer.receive() == "33[3]"  # no ack for the failing handlers
            await peer.send("0/other,")
            reply = await peer.receive()
            assert reply == '4/other,{"message":"Internal server error"}'
            await peer.send("1")
        with trio.fail_after(5):
            while len(seen) < 4:
                await trio.sleep(0.01)
    assert seen == [
        ("/", "boom", "RuntimeError('handler bug')"),
        ("/", "late", "KeyError('before answering')"),
        ("/other", "connect", "ValueError('connect bug')"),
        ("/", "disconnect", "LookupError('client namespace disconnect')"),
    ]


async def test_on_error_decorator_and_a_failing_hook_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    sio = SocketIOServer()

    @sio.on_error
    def hook(socket: Socket, event: str, exc: Exception) -> None:
        raise RuntimeError("hook bug")

    @sio.on("boom")
    async def boom(socket: Socket) -> None:
        raise ValueError("x")

    async with running(sio) as port, raw(port) as peer:
        await peer.connect()
        await peer.send('21["boom"]')
        await peer.send('2["noop"]')
        await peer.send('22["boom"]')
        with trio.fail_after(5):
            while sum("on_error hook failed" in r.message for r in caplog.records) < 2:
                await trio.sleep(0.01)


async def test_without_hook_the_exception_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    sio = SocketIOServer()

    @sio.on("boom")
    async def boom(socket: Socket) -> None:
        raise ValueError("x")

    @sio.on("echo")
    async def echo(socket: Socket) -> int:
        return 1

    async with running(sio) as port, raw(port) as peer:
        await peer.connect()
        await peer.send('21["boom"]')
        await peer.send('22["echo"]')
        assert await peer.receive() == "32[1]"
    assert any("'boom'" in r.message and r.exc_info for r in caplog.records)


# ---------------------------------------------------------------------------- volleyio's client


async def test_volleyio_client_ack_object_no_ack_and_as_list() -> None:
    sio = SocketIOServer()
    got: dict[str, Any] = {}

    @sio.on("probe")
    async def probe(socket: Socket) -> str:
        got["later"] = await socket.call("later", as_list=True)
        got["null"] = await socket.call("null", as_list=True)
        got["empty"] = await socket.call("empty", as_list=True)
        with trio.move_on_after(0.3):
            got["declined"] = await socket.call("decline")
        return "ok"

    @sio.on("empty")
    async def empty(socket: Socket) -> None:
        return None

    @sio.on("null")
    async def null(socket: Socket) -> tuple[None]:
        return (None,)

    async with running(sio) as port:
        client = vt.SocketIOClient(f"http://127.0.0.1:{port}", transports=("websocket",))
        pending: list[Ack] = []

        @client.on("later")
        def later(*, ack: Ack) -> None:
            pending.append(ack)

        @client.on("null")
        def null_handler() -> tuple[None]:
            return (None,)

        @client.on("empty")
        async def empty_handler() -> None:
            return None

        @client.on("decline")
        def decline() -> Any:
            return NO_ACK

        async with client:
            async with trio.open_nursery() as nursery:

                async def run_probe() -> None:
                    got["probe"] = await client.call("probe")

                nursery.start_soon(run_probe)
                with trio.fail_after(5):
                    while not pending:
                        await trio.sleep(0.01)
                pending[0](1, None)
            assert await client.call("null", as_list=True) == [None]
            assert await client.call("empty", as_list=True) == []
            assert await client.call("null") is None
    assert got == {"later": [1, None], "null": [None], "empty": [], "probe": "ok"}


# ---------------------------------------------------------------------------- real peers


def acks_server(record: dict[str, Any]) -> SocketIOServer:
    """The server tests/js/sio_acks_client.js and tests/peers/pys_acks_client.py expect."""

    async def on_error(socket: Socket, event: str, exc: Exception) -> None:
        record.setdefault("errors", []).append([event, str(exc)])

    sio = SocketIOServer(on_error=on_error)

    @sio.on("connect")
    async def connect(socket: Socket, auth: Any) -> None:
        await socket.join("probe-" + socket.id)

    @sio.on("later")
    async def later(socket: Socket, n: int, ms: int, *, ack: Ack) -> None:
        async def answer() -> None:
            await trio.sleep(ms / 1000)
            ack("done", n)

        sio.start_background_task(answer)

    @sio.on("twice")
    def twice(socket: Socket, *, ack: Ack) -> None:
        ack("first")
        try:
            ack("second")
        except vt.AckError:
            record["twice_refused"] = record.get("twice_refused", 0) + 1

    @sio.on("decline")
    async def decline(socket: Socket) -> Any:
        return NO_ACK

    @sio.on("silent")
    async def silent(socket: Socket, *, ack: Ack) -> None:
        record["silent"] = ack.requested

    @sio.on("fail")
    async def fail(socket: Socket) -> None:
        raise RuntimeError("planned failure")

    @sio.on("empty")
    async def empty(socket: Socket) -> None:
        return None

    @sio.on("null")
    async def null(socket: Socket) -> tuple[None]:
        return (None,)

    @sio.on("value")
    async def value(socket: Socket, v: Any) -> Any:
        return v

    @sio.on("probe")
    async def probe(socket: Socket) -> dict[str, Any]:
        with trio.fail_after(10):
            gathered = await sio.gather("ask-null", to="probe-" + socket.id, timeout=5, as_list=True)
            return {
                "empty": await socket.call("ask-empty", as_list=True),
                "null": await socket.call("ask-null", as_list=True),
                "two": await socket.call("ask-two", as_list=True),
                "null_plain": await socket.call("ask-null"),
                "two_plain": list(await socket.call("ask-two")),
                "gather": list(gathered.values()),
            }

    return sio


async def run_driver(argv: list[str], cwd: Path) -> dict[str, Any]:
    with trio.fail_after(60):
        result = await trio.run_process(argv, cwd=str(cwd), capture_stdout=True, capture_stderr=True, check=False)
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"{argv[1]} printed nothing (exit {result.returncode}); stderr: {result.stderr.decode()[-3000:]}"
    data: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in data, data["error"]
    assert result.returncode == 0 and data.get("ok") is True, (result.returncode, data)
    return data


MODES = {"polling": ["polling"], "websocket": ["websocket"], "upgrade": ["polling", "websocket"]}


async def against(argv_for_url: Any, cwd: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    record: dict[str, Any] = {}
    sio = acks_server(record)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(sio.serve, "127.0.0.1", 0))
        try:
            out = await run_driver(argv_for_url(f"http://127.0.0.1:{server.port}"), cwd)
        finally:
            nursery.cancel_scope.cancel()
    return out, record


def check_common(out: dict[str, Any], record: dict[str, Any]) -> None:
    assert out["decline"] == {"timeout": True}
    assert out["silent"] == {"timeout": True}
    assert out["fail"] == {"timeout": True}
    assert out["later_ms"] >= 250  # answered by the background task, 300 ms later
    assert record["errors"] == [["fail", "planned failure"]]
    assert record["silent"] is True
    assert record["twice_refused"] == 1
    probe_key = "args" if "args" in out["probe"] else "value"
    probe = out["probe"][probe_key]
    probe = probe[0] if isinstance(probe, list) else probe
    assert probe == {
        "empty": [], "null": [None], "two": [1, "two"], "null_plain": None, "two_plain": [1, "two"],
        "gather": [[None]],
    }


@pytest.mark.interop
@pytest.mark.parametrize("mode", list(MODES))
async def test_socket_io_client_in_node(mode: str) -> None:
    require_peer(node_path() is not None and (JS_DIR / "node_modules" / "socket.io-client").is_dir(),
                 "node with tests/js/node_modules/socket.io-client")
    node = node_path()
    assert node is not None
    out, record = await against(
        lambda url: [node, "sio_acks_client.js", json.dumps({"url": url, "transports": MODES[mode]})], JS_DIR
    )
    check_common(out, record)
    assert out["later"] == {"args": ["done", 7]}
    assert out["with_ack"] == "done"  # emitWithAck resolves with the first argument
    assert out["twice"] == {"args": ["first"]}
    assert out["empty"] == {"args": []}
    assert out["null"] == {"args": [None]}
    assert out["value"] == {"args": ["x"]}
    assert out["after"] == {"args": ["still here"]}
    assert out["transport_end"] == ("polling" if mode == "polling" else "websocket")


@pytest.mark.interop
@pytest.mark.parametrize("mode", list(MODES))
async def test_python_socketio_client(mode: str) -> None:
    try:
        import aiohttp  # noqa: F401
        import socketio  # noqa: F401
        available = True
    except ImportError:
        available = False
    require_peer(available, "python-socketio with aiohttp (the interop extra)")
    out, record = await against(
        lambda url: [sys.executable, "pys_acks_client.py", json.dumps({"url": url, "transports": MODES[mode]})],
        PEERS_DIR,
    )
    check_common(out, record)
    assert out["later"] == {"value": ["done", 7]}
    assert out["twice"] == {"value": "first"}
    # python-socketio's call() returns None for both [] and [null]: the wire difference is
    # checked from the server's side ("probe") and by the Node driver.
    assert out["empty"] == {"value": None}
    assert out["null"] == {"value": None}
    assert out["value"] == {"value": "x"}
    assert out["after"] == {"value": "still here"}
