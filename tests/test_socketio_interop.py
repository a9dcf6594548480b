"""volleyio's trio SocketIOServer against the official clients: socket.io-client 4.8 in
Node (tests/js/sio_client.js) and python-socketio's AsyncClient (tests/peers/pys_client.py),
each polling-only, WebSocket-only and upgrading.

Both drivers run scenarios ("connect", "acks", "binary", "rooms", "disconnect", "order") against a
server implementing the contract written down in tests/js/sio_ref_server.js; the same
drivers also run against that Node reference server (``test_*_against_node_reference``)
so a failure against volleyio that passes there points at volleyio.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import IN_CI, JS_DIR, node_path, require_peer
from volleyio.trio import Socket, SocketIOServer

pytestmark = pytest.mark.interop

PEERS_DIR = Path(__file__).parent / "peers"
MODES: dict[str, list[str]] = {
    "polling": ["polling"],
    "websocket": ["websocket"],
    "upgrade": ["polling", "websocket"],
}
SCENARIOS = ("connect", "acks", "binary", "rooms", "disconnect", "order")
MANY = 500
#: Per driver run; the drivers cap themselves at 40 s and the machine is shared.
DRIVER_TIMEOUT = 90.0


# ---------------------------------------------------------------------------- peers


def node_sio_available() -> bool:
    modules = JS_DIR / "node_modules"
    return node_path() is not None and (modules / "socket.io-client").is_dir() and (modules / "socket.io").is_dir()


def python_socketio_available() -> bool:
    try:
        import aiohttp  # noqa: F401  - the AsyncClient's HTTP and WebSocket transport
        import socketio  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def node() -> str:
    require_peer(node_sio_available(), "node with tests/js/node_modules/socket.io(-client) (npm ci in tests/js)")
    path = node_path()
    assert path is not None
    return str(path)


@pytest.fixture
def python_socketio() -> str:
    require_peer(python_socketio_available(), "python-socketio with aiohttp (the interop extra)")
    return sys.executable


async def run_driver(argv: list[str], cwd: Path) -> dict[str, Any]:
    """Run a driver to completion (killed by PID if it overruns) and return its last JSON line."""
    with trio.fail_after(DRIVER_TIMEOUT):
        result = await trio.run_process(argv, cwd=str(cwd), capture_stdout=True, capture_stderr=True, check=False)
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"{argv[1]} printed nothing (exit {result.returncode}); stderr: {result.stderr.decode()[-3000:]}"
    data: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in data, data["error"]
    assert result.returncode == 0 and data.get("ok") is True, (result.returncode, data)
    return data


def node_argv(node: str, url: str, mode: str, scenario: str, many: int = MANY) -> list[str]:
    config = {"url": url, "transports": MODES[mode], "scenario": scenario, "many": many}
    return [node, "sio_client.js", json.dumps(config)]


def python_argv(python: str, url: str, mode: str, scenario: str, many: int = MANY) -> list[str]:
    config = {"url": url, "transports": MODES[mode], "scenario": scenario, "many": many}
    return [python, "pys_client.py", json.dumps(config)]


# ---------------------------------------------------------------------------- volleyio side


@dataclass
class Record:
    """What the volleyio server saw, checked by the tests next to what the drivers saw."""

    connects: list[tuple[str, str, str, Any]] = field(default_factory=list)  # (namespace, sid, eio sid, auth)
    refused: list[tuple[str, Any]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    transports: set[str] = field(default_factory=set)


def build_server(record: Record) -> SocketIOServer:
    """The scenario contract of tests/js/sio_ref_server.js, on volleyio."""
    sio = SocketIOServer()
    for name in ("/", "/admin"):
        nsp = sio.of(name)

        async def connect(socket: Socket, auth: Any) -> None:
            if isinstance(auth, dict) and auth.get("token") == "bad":
                record.refused.append((socket.namespace, auth))
                raise vt.ConnectionRefusedError("not authorized", {"code": 4001, "why": "bad token"})
            record.connects.append((socket.namespace, socket.id, socket.eio_sid, auth))
            for i in range(auth.get("burst", 0) if isinstance(auth, dict) else 0):
                await socket.emit("burst", *((i, bytes([i % 256])) if i % 3 == 0 else (i,)))

        async def disconnect(socket: Socket, reason: str) -> None:
            record.reasons[socket.id] = reason

        async def whoami(socket: Socket) -> dict[str, Any]:
            record.transports.add(socket.transport)
            return {"sid": socket.id, "eio": socket.eio_sid, "nsp": socket.namespace, "auth": socket.auth,
                    "transport": socket.transport}

        async def echo(socket: Socket, *args: Any) -> tuple[Any, ...]:
            return args

        async def echo_event(socket: Socket, *args: Any) -> bool:
            await socket.emit("echoed", *args)
            return True

        async def ask(socket: Socket, n: int, payload: Any) -> list[Any]:
            answers: list[Any] = [None] * n

            async def one(i: int) -> None:
                answers[i] = await socket.call("question", i, payload)

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for i in range(n):
                        nursery.start_soon(one, i)
            return answers

        def room_size(socket: Socket, room: str) -> int:
            return len(sio.of(socket.namespace).members(room))

        async def join(socket: Socket, room: str) -> int:
            await socket.join(room)
            return room_size(socket, room)

        async def leave(socket: Socket, room: str) -> int:
            await socket.leave(room)
            return room_size(socket, room)

        async def broadcast(socket: Socket, room: str, *args: Any) -> bool:
            await sio.emit("bcast", *args, to=room, namespace=socket.namespace)
            return True

        async def poll_room(socket: Socket, room: str) -> list[Any]:
            answers = await sio.gather("poll", to=room, namespace=socket.namespace, timeout=5)
            return sorted(answers.values())

        async def kick_me(socket: Socket) -> None:
            await socket.emit("kicked", "bye")
            await socket.disconnect()

        async def reasons(socket: Socket) -> dict[str, str]:
            return dict(record.reasons)

        async def seq(socket: Socket, i: int) -> None:
            socket.data.setdefault("seq", []).append(i)

        async def seq_log(socket: Socket) -> list[int]:
            return list(socket.data.get("seq", []))

        async def ticks(socket: Socket, n: int) -> int:
            for i in range(n):
                await socket.emit("tick", i)
            return n

        nsp.on("connect", connect)
        nsp.on("disconnect", disconnect)
        nsp.on("whoami", whoami)
        nsp.on("echo", echo)
        nsp.on("echo-event", echo_event)
        nsp.on("ask", ask)
        nsp.on("join", join)
        nsp.on("leave", leave)
        nsp.on("room-size", room_size)
        nsp.on("broadcast", broadcast)
        nsp.on("poll-room", poll_room)
        nsp.on("kick-me", kick_me)
        nsp.on("reasons", reasons)
        nsp.on("seq", seq)
        nsp.on("seq-log", seq_log)
        nsp.on("ticks", ticks)
    return sio


async def run_against_volleyio(argv_for_url: Any, cwd: Path,
                               proxy: Callable[[int], LoopbackProxy] | None = None) -> tuple[dict[str, Any], Record]:
    """Serve the contract on a fresh SocketIOServer (optionally behind ``proxy(port)``) and
    run one driver against it."""
    record = Record()
    sio = build_server(record)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(sio.serve, "127.0.0.1", 0))
        port = server.port if proxy is None else await proxy(server.port).serve(nursery)
        try:
            out = await run_driver(argv_for_url(f"http://127.0.0.1:{port}"), cwd)
        finally:
            nursery.cancel_scope.cancel()
    return out, record


# ---------------------------------------------------------------------------- a loopback HTTP proxy


HEAD_LIMIT = 65536


class LoopbackProxy:
    """An HTTP/1.1 forward to ``upstream_port`` that refuses WebSocket upgrades with 400
    (``websocket="refuse"``: a proxy that cannot carry WebSocket) or holds each upgrade
    request back for ``delay`` seconds before tunnelling it (``websocket="delay"``: a slow
    path, so polling traffic is still flowing when the upgrade completes).

    Plain requests go one per client connection: upstream with ``Connection: close``, the
    response back (framed by its Content-Length), then both sides close. Clients simply
    open new connections, which keeps this proxy free of keep-alive state.
    """

    def __init__(self, upstream_port: int, *, websocket: str, delay: float = 0.0) -> None:
        assert websocket in ("refuse", "delay")
        self.upstream_port = upstream_port
        self.websocket = websocket
        self.delay = delay
        self.refused_upgrades = 0
        self.tunnelled_upgrades = 0
        self.forwarded: list[str] = []

    async def handle(self, client: trio.SocketStream) -> None:
        async with client:
            try:
                await self._handle(client)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client gave up on this request (a cancelled poll): nothing to relay

    async def _handle(self, client: trio.SocketStream) -> None:
        head, rest = await read_head(client)
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        headers = [line.split(":", 1) for line in lines[1:] if ":" in line]
        fields = {name.strip().lower(): value.strip() for name, value in headers}
        if "websocket" in fields.get("upgrade", "").lower():
            if self.websocket == "refuse":
                self.refused_upgrades += 1
                await client.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 21\r\nconnection: close\r\n\r\n"
                                      b"websocket not allowed")
                return
            await trio.sleep(self.delay)
            self.tunnelled_upgrades += 1
            upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
            async with upstream:
                await upstream.send_all(head + b"\r\n\r\n" + rest)
                await tunnel(client, upstream)
            return
        length = int(fields.get("content-length", "0"))
        body = bytearray(rest)
        while len(body) < length:
            chunk = await client.receive_some(65536)
            if not chunk:
                return
            body += chunk
        kept = [f"{name}:{value}" for name, value in headers
                if name.strip().lower() not in ("connection", "keep-alive", "proxy-connection")]
        request = "\r\n".join([lines[0], *kept, "connection: close", "", ""]).encode("latin-1")
        self.forwarded.append(lines[0])
        upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
        async with upstream:
            await upstream.send_all(request + bytes(body))
            await relay_response(upstream, client)

    async def serve(self, nursery: trio.Nursery) -> int:
        """Listen on a free loopback port (in ``nursery``); returns the port."""
        listeners = await nursery.start(partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1"))
        port: int = listeners[0].socket.getsockname()[1]
        return port


async def read_head(stream: trio.abc.ReceiveStream) -> tuple[bytes | None, bytes]:
    data = bytearray()
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_LIMIT:
            return None, b""
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    return head, rest


async def relay_response(upstream: trio.SocketStream, client: trio.SocketStream) -> None:
    head, rest = await read_head(upstream)
    if head is None:
        return
    length: int | None = None
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    await client.send_all(head + b"\r\n\r\n" + rest)
    sent = len(rest)
    while length is None or sent < length:
        chunk = await upstream.receive_some(65536)
        if not chunk:
            break
        await client.send_all(chunk)
        sent += len(chunk)


async def tunnel(a: trio.SocketStream, b: trio.SocketStream) -> None:
    """Copy bytes both ways until either side closes."""

    async def pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
        try:
            while chunk := await source.receive_some(65536):
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, a, b, nursery.cancel_scope)
        nursery.start_soon(pump, b, a, nursery.cancel_scope)


# ---------------------------------------------------------------------------- checks shared by both clients


def check_common(out: dict[str, Any], mode: str, scenario: str, record: Record | None, client: str,
                 many: int = MANY) -> None:
    expected_transport = "polling" if mode == "polling" else "websocket"
    assert out["transport"] == expected_transport
    if "final" in out:
        assert out["final"] == expected_transport
    if scenario == "connect":
        me, admin = out["me"], out["adminMe"]
        assert me["eio"] == admin["eio"] and me["sid"] != admin["sid"] != me["eio"]
        assert out["unknown"]["message"] == "Invalid namespace"
        for refusal in (out["refused"], out["refusedAdmin"]):
            assert (refusal["message"], refusal["data"]) == ("not authorized", {"code": 4001, "why": "bad token"})
        if record is not None:
            assert ("/", me["sid"], me["eio"], me["auth"]) in record.connects
            assert ("/admin", admin["sid"], admin["eio"], admin["auth"]) in record.connects
            assert {nsp for nsp, _ in record.refused} == {"/", "/admin"}
            assert record.transports == {expected_transport}
    elif scenario == "acks":
        assert out["many"] == many and out["questions"] == many + 3
    elif scenario == "binary":
        assert out["binMany"] == min(many, 200)
    elif scenario == "order":
        assert out["n"] == min(many, 300)
    elif scenario == "rooms":
        assert out["polled"] == ["c1", "c2"]
        assert out["joins"] == [1, 2, 1] and (out["redAfter"], out["blueAfter"], out["ownRoom"]) == (1, 0, 1)
        if record is not None:
            assert [record.reasons.get(out["c2"]), record.reasons.get(out["c3"])] == out["reasons"]
    elif scenario == "disconnect":
        assert out["reasons"][0] == "server namespace disconnect"
        if client == "node":
            assert (out["clientSawKick"], out["clientSawLeave"]) == ("io server disconnect", "io client disconnect")
            assert out["reasons"] == ["server namespace disconnect", "client namespace disconnect"]
            if record is not None:
                assert record.reasons[out["kicked"]] == "server namespace disconnect"
                assert record.reasons[out["rejoined"]] == "client namespace disconnect"
        else:
            assert out["clientReasons"]["/admin"] == ["server disconnect"]  # python-socketio's wording
            assert out["leftReason"] == "client namespace disconnect"
            if record is not None:
                assert record.reasons[out["kicked"]] == "server namespace disconnect"
                assert record.reasons[out["left"]] == "client namespace disconnect"


# ---------------------------------------------------------------------------- volleyio vs official clients


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("mode", list(MODES))
async def test_node_client(node: str, mode: str, scenario: str) -> None:
    out, record = await run_against_volleyio(lambda url: node_argv(node, url, mode, scenario), JS_DIR)
    check_common(out, mode, scenario, record, "node")
    if scenario == "rooms":
        # The JS client's namespace disconnect and its Engine.IO close packet (Node's wording).
        assert out["reasons"] == ["client namespace disconnect", "transport close"]


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
async def test_node_client_upgrade_under_traffic(node: str, delay: float) -> None:
    """The WebSocket handshake is held back by a proxy while the client is busy on polling:
    the switch must neither lose nor reorder packets, in either direction. (The delays
    only shape the traffic: on this machine 0.05-0.15 s land the switch inside the
    connect-time burst or the first round; nothing here depends on where it lands.)"""
    proxies: list[LoopbackProxy] = []

    def slow_upgrades(port: int) -> LoopbackProxy:
        proxies.append(LoopbackProxy(port, websocket="delay", delay=delay))
        return proxies[-1]

    out, record = await run_against_volleyio(lambda url: node_argv(node, url, "upgrade", "order"), JS_DIR,
                                             slow_upgrades)
    check_common(out, "upgrade", "order", record, "node")
    assert proxies[0].tunnelled_upgrades == 1 and proxies[0].forwarded


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("mode", list(MODES))
async def test_python_client(python_socketio: str, mode: str, scenario: str) -> None:
    out, record = await run_against_volleyio(lambda url: python_argv(python_socketio, url, mode, scenario), PEERS_DIR)
    check_common(out, mode, scenario, record, "python")
    if scenario == "rooms":
        # python-socketio's disconnect() may close the transport before its DISCONNECT
        # packet is written, and c3 was aborted: both are Engine.IO-level departures.
        assert out["reasons"][0] in ("client namespace disconnect", "transport close")
        assert out["reasons"][1] in ("transport close", "transport error")


# ---------------------------------------------------------------------------- the drivers against Node's socket.io


@dataclass
class NodeReference:
    port: int
    process: trio.Process


@pytest.fixture
def reference_once(speedups_impl: str) -> None:
    if speedups_impl != "compiled" and not IN_CI:
        # The reference server does not run volleyio code: once per session is enough locally.
        pytest.skip("the Node reference control runs with the compiled speedups only")


@pytest.fixture
async def node_reference(node: str, reference_once: None) -> AsyncIterator[NodeReference]:
    async with trio.open_nursery() as nursery:
        process = await trio.lowlevel.open_process([node, "sio_ref_server.js"], cwd=str(JS_DIR),
                                                   stdin=-1, stdout=-1)
        try:
            assert process.stdout is not None
            first = b""
            with trio.fail_after(30):
                while not first.endswith(b"\n"):
                    chunk = await process.stdout.receive_some(1)
                    assert chunk, "sio_ref_server.js exited before listening"
                    first += chunk

            async def drain() -> None:  # its per-connection log lines must not fill the pipe
                assert process.stdout is not None
                while await process.stdout.receive_some(65536):
                    pass

            nursery.start_soon(drain)
            yield NodeReference(json.loads(first)["port"], process)
        finally:
            process.kill()  # by PID: this process only
            with trio.move_on_after(10):
                await process.wait()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("mode", list(MODES))
async def test_node_client_against_node_reference(node: str, node_reference: NodeReference, mode: str,
                                                  scenario: str) -> None:
    url = f"http://127.0.0.1:{node_reference.port}"
    out = await run_driver(node_argv(node, url, mode, scenario), JS_DIR)
    check_common(out, mode, scenario, None, "node")


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("mode", list(MODES))
async def test_python_client_against_node_reference(python_socketio: str, node_reference: NodeReference, mode: str,
                                                    scenario: str) -> None:
    url = f"http://127.0.0.1:{node_reference.port}"
    many = MANY
    if mode == "polling" and scenario in ("acks", "binary", "order"):
        # Node writes its whole buffer into one poll response, and python-engineio refuses
        # payloads of more than 16 packets ("Too many packets in payload"), so hundreds of
        # acks in flight stall there (a binary ack is 1 + its attachments packets).
        # volleyio caps poll responses at 16 packets (test_python_client runs the full count).
        many = {"acks": 16, "binary": 3, "order": 5}[scenario]
    out = await run_driver(python_argv(python_socketio, url, mode, scenario, many), PEERS_DIR)
    check_common(out, mode, scenario, None, "python", many)
