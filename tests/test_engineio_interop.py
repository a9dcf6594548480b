"""Engine.IO interop (issue #5): volleyio's trio Engine.IO server against the official
JS client (npm engine.io-client, run by tests/js/eio_client.js) and python-engineio's
AsyncClient (tests/peers/pye_client.py), in polling-only, websocket-only and
polling→websocket modes; plus a proxy that blocks the WebSocket upgrade, the maxPayload
boundary, a frozen client (ping timeout), an upgrade in the middle of a flood and a late
pong scripted at the wire level.

Both client scripts run the same scripted exchange (see eio_client.js) and print what they
received; the server-side handler records what it received. Expectations are computed
here from the same payload recipes. The ``node-ref`` parametrization runs the scripts
against the official Node engine.io server (tests/js/eio_ref_server.js): it validates the
scripts and shows the expectations are Node's behaviour, not ours.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h11
import pytest
import trio

import volleyio.trio as vt
from _trio_support import JS_DIR, TEST_TIMEOUT, node_path, require_peer
from volleyio.engineio import ServerConfig

pytestmark = pytest.mark.interop

PEERS_DIR = Path(__file__).parent / "peers"
BIG = 512 * 1024
FLOOD = 200
#: Heartbeats the "heartbeat" step waits for while idle (> 5 intervals, as issue #5 asks).
PINGS = 6
PING_INTERVAL_MS = 300
PING_TIMEOUT_MS = 200
MAX_PAYLOAD = 1_000_000
CLIENT_TIMEOUT_MS = 25_000
#: Messages the server sends right before it closes the session.
GOODBYES = 20

MODES: dict[str, dict[str, Any]] = {
    "polling": {"transports": ["polling"], "upgrade": False, "expect_upgrade": False},
    "websocket": {"transports": ["websocket"], "upgrade": False, "expect_upgrade": False},
    "upgrade": {"transports": ["polling", "websocket"], "upgrade": True, "expect_upgrade": True},
}
#: Each library's own defaults (engine.io-client also lists webtransport, which the
#: server does not offer): polling first, then the upgrade.
DEFAULT_MODE: dict[str, Any] = {"transports": None, "upgrade": True, "expect_upgrade": True}
FINAL_TRANSPORT = {"polling": "polling", "websocket": "websocket", "upgrade": "websocket"}

# --------------------------------------------------------------------------- payloads


def big_text(n: int, seed: str) -> str:
    unit = f"{seed}-volleyio-€-"
    return (unit * (n // len(unit) + 1))[:n]


@functools.lru_cache(maxsize=None)
def big_binary(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


def flood_item(prefix: str, i: int) -> str | bytes:
    """Every 4th flood message is binary, so batched payloads mix both kinds."""
    text = f"{prefix}:{i}"
    return text.encode() if i % 4 == 3 else text


def describe(data: str | bytes) -> dict[str, Any]:
    """Same summary as ``describe()`` in the client scripts."""
    if isinstance(data, str):
        if len(data) <= 64:
            return {"type": "text", "text": data}
        return {"type": "text", "len": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}
    if len(data) <= 64:
        return {"type": "binary", "hex": data.hex()}
    return {"type": "binary", "len": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def expected_client_received(steps: list[str], close: str = "client") -> list[dict[str, Any]]:
    out: list[str | bytes] = []
    if "basic" in steps:
        out += ["héllo ✓", bytes(range(256))]
    if "big" in steps:
        out += [big_text(BIG, "s"), big_binary(BIG, 5), big_text(BIG, "c"), big_binary(BIG, 3)]
    if "flood" in steps:
        out += [flood_item("s", i) for i in range(FLOOD)] + ["flood-ok"]
    if "limit" in steps:
        out += ["L" * (MAX_PAYLOAD - 1)]
    if "heartbeat" in steps:
        out += ["after-idle"]
    if close == "server":
        out += [f"bye:{i}" for i in range(GOODBYES)]
    return [describe(item) for item in out]


def expected_server_received(steps: list[str], close: str) -> list[dict[str, Any]]:
    out: list[str | bytes] = []
    if "basic" in steps:
        out += ["héllo ✓", bytes(range(256))]
    if "big" in steps:
        out += ["please:big", big_text(BIG, "c"), big_binary(BIG, 3)]
    if "flood" in steps:
        out += [f"please:flood:{FLOOD}"] + [flood_item("c", i) for i in range(FLOOD)]
    if "limit" in steps:
        out += ["L" * (MAX_PAYLOAD - 1)]
    if "heartbeat" in steps:
        out += ["after-idle"]
    if close == "server":
        out += ["please:close"]
    return [describe(item) for item in out]


# ------------------------------------------------------------------------ the servers


@dataclass
class ServerSide:
    """What the server saw of one session."""

    received: list[dict[str, Any]]
    reason: str | None
    transport: str | None
    #: pongs received (None when the server cannot tell)
    pongs: int | None
    pings: int | None = None
    statistics: dict[str, Any] = field(default_factory=dict)


class ScriptedHandler:
    """Server side of the scripted exchange, on volleyio's EngineIOApp."""

    def __init__(self) -> None:
        self.sessions: list[ServerSide] = []
        self.finished = trio.Event()

    async def __call__(self, session: vt.EngineIOSession) -> None:
        received: list[dict[str, Any]] = []
        flood_expected = -1
        flood_seen = 0
        try:
            async for data in session:
                received.append(describe(data))
                if data == "please:big":
                    await session.send(big_text(BIG, "s"))
                    await session.send(big_binary(BIG, 5))
                elif isinstance(data, str) and data.startswith("please:flood:"):
                    flood_expected = int(data.removeprefix("please:flood:"))
                    flood_seen = 0
                    for i in range(flood_expected):
                        await session.send(flood_item("s", i))
                elif data == "please:close":
                    # A server close delivers what was sent before it (more than one
                    # poll's worth of packets).
                    for i in range(GOODBYES):
                        await session.send(f"bye:{i}")
                    await session.close()
                elif data[:2] in ("c:", b"c:"):
                    flood_seen += 1
                    if flood_seen == flood_expected:
                        await session.send("flood-ok")
                else:
                    await session.send(data)
        except vt.EngineIOClosed:
            pass
        finally:
            stats = dict(session.statistics())
            self.sessions.append(ServerSide(
                received=received, reason=session.disconnect_reason, transport=session.transport,
                # packets_in counts messages, pongs and a client's `1`.
                pongs=int(stats["packets_in"]) - int(stats["messages_in"])
                - (1 if session.disconnect_reason == "client close" else 0),
                pings=int(stats["packets_out"]) - int(stats["messages_out"]),
                statistics=stats,
            ))
            self.finished.set()


@dataclass
class RunningServer:
    port: int
    #: waits for the (single) session of the test to be over, returns what the server saw
    session_done: Callable[[], Awaitable[ServerSide]]
    kind: str


def server_config(ping_timeout_ms: int = PING_TIMEOUT_MS) -> ServerConfig:
    return ServerConfig(ping_interval_ms=PING_INTERVAL_MS, ping_timeout_ms=ping_timeout_ms, max_payload=MAX_PAYLOAD)


@asynccontextmanager
async def volleyio_server(ping_timeout_ms: int = PING_TIMEOUT_MS) -> AsyncIterator[RunningServer]:
    handler = ScriptedHandler()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(vt.serve_engineio, handler, "127.0.0.1", 0, config=server_config(ping_timeout_ms))
        )

        async def done() -> ServerSide:
            await handler.finished.wait()
            return handler.sessions[0]

        yield RunningServer(server.port, done, "volleyio")
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def node_reference_server(node: str, ping_timeout_ms: int = PING_TIMEOUT_MS) -> AsyncIterator[RunningServer]:
    config = json.dumps({"pingInterval": PING_INTERVAL_MS, "pingTimeout": ping_timeout_ms, "big": BIG,
                         "goodbyes": GOODBYES})
    process = await trio.lowlevel.open_process(
        [node, "eio_ref_server.js", config], cwd=str(JS_DIR), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    sessions: list[dict[str, Any]] = []
    new_line = trio.Event()
    port: list[int] = []
    try:
        async with trio.open_nursery() as nursery:

            async def read_lines() -> None:
                nonlocal new_line
                assert process.stdout is not None
                buf = b""
                while True:
                    chunk = await process.stdout.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        item = json.loads(line)
                        if "port" in item:
                            port.append(int(item["port"]))
                        else:
                            sessions.append(item)
                        new_line.set()
                        new_line = trio.Event()

            nursery.start_soon(read_lines)
            while not port:
                assert process.returncode is None, "the node reference server exited before listening"
                await new_line.wait()

            async def done() -> ServerSide:
                while not sessions:
                    await new_line.wait()
                item = sessions[0]
                return ServerSide(received=item["received"], reason=item["reason"], transport=item["transport"],
                                  pongs=item["pongs"])

            yield RunningServer(port[0], done, "node-ref")
            nursery.cancel_scope.cancel()
    finally:
        assert process.stdin is not None
        await process.stdin.aclose()
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await process.wait()
        if process.returncode is None:
            process.kill()  # only the process this test started
            with trio.CancelScope(shield=True):
                await process.wait()


# ------------------------------------------------------------------------- the clients


@pytest.fixture
def node() -> str:
    available = node_path() is not None and (JS_DIR / "node_modules" / "engine.io-client").is_dir() \
        and (JS_DIR / "node_modules" / "engine.io").is_dir()
    require_peer(available, "node with tests/js/node_modules/engine.io and engine.io-client (npm ci in tests/js)")
    path = node_path()
    assert path is not None
    return path


def _pye_available() -> bool:
    return importlib.util.find_spec("engineio") is not None and importlib.util.find_spec("aiohttp") is not None


@pytest.fixture
def pye() -> str:
    require_peer(_pye_available(), "python-engineio with aiohttp")
    return sys.executable


async def run_client(command: list[str], cwd: Path) -> dict[str, Any]:
    """Run a client script to completion; returns its final ``done`` line.

    On a test timeout (cancellation) trio terminates, then kills, the process by PID.
    """
    result = await trio.run_process(command, cwd=str(cwd), capture_stdout=True, capture_stderr=True, check=False)
    stdout = result.stdout.decode()
    stderr = result.stderr.decode()
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    done = [line for line in lines if line.get("event") == "done"]
    assert done, f"client printed no result\nstdout: {stdout[-3000:]}\nstderr: {stderr[-3000:]}"
    out: dict[str, Any] = done[-1]
    out["events"] = [line for line in lines if line.get("event") != "done"]
    out["returncode"] = result.returncode
    out["stderr"] = stderr[-3000:]
    return out


def client_command(client: str, executable: str, config: dict[str, Any]) -> tuple[list[str], Path]:
    payload = json.dumps(config)
    if client == "node":
        return [executable, "eio_client.js", payload], JS_DIR
    return [executable, str(PEERS_DIR / "pye_client.py"), payload], PEERS_DIR


def make_config(port: int, mode: str, steps: list[str], close: str) -> dict[str, Any]:
    return {
        "url": f"http://127.0.0.1:{port}", "path": "/engine.io/",
        **(DEFAULT_MODE if mode == "default" else MODES[mode]), "steps": steps, "big": BIG,
        "flood": FLOOD, "pings": PINGS, "close": close, "timeout_ms": CLIENT_TIMEOUT_MS, "max_payload": MAX_PAYLOAD,
    }


@pytest.fixture(params=["node", "pye"])
def client(request: pytest.FixtureRequest) -> tuple[str, str]:
    name: str = request.param
    executable: str = request.getfixturevalue(name)
    return name, executable


@pytest.fixture(params=["volleyio", pytest.param("node-ref", marks=pytest.mark.pure_only)])
def server_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "node-ref":
        request.getfixturevalue("node")
    return kind


@asynccontextmanager
async def start_server(kind: str, ping_timeout_ms: int = PING_TIMEOUT_MS) -> AsyncIterator[RunningServer]:
    if kind == "volleyio":
        async with volleyio_server(ping_timeout_ms) as server:
            yield server
    else:
        path = node_path()
        assert path is not None
        async with node_reference_server(path, ping_timeout_ms) as server:
            yield server


def assert_client_ok(out: dict[str, Any]) -> None:
    assert out["error"] is None and out["returncode"] == 0, out


# ----------------------------------------------------------------------------- the tests

ALL_STEPS = ["basic", "big", "flood", "heartbeat"]


@pytest.mark.parametrize("mode", list(MODES))
async def test_exchange_client_closes(server_kind: str, client: tuple[str, str], mode: str) -> None:
    """Text, binary, 512 KiB both ways, 200 ordered messages both ways, > 5 heartbeats,
    then the client closes."""
    name, executable = client
    with trio.fail_after(TEST_TIMEOUT + 15):
        async with start_server(server_kind) as server:
            command, cwd = client_command(name, executable, make_config(server.port, mode, ALL_STEPS, "client"))
            out = await run_client(command, cwd)
            seen: ServerSide = await server.session_done()

    assert_client_ok(out)
    assert out["open"]["transport"] == MODES[mode]["transports"][0]
    assert out["handshake"]["pingInterval"] == PING_INTERVAL_MS
    assert out["handshake"]["pingTimeout"] == PING_TIMEOUT_MS
    assert out["handshake"]["upgrades"] == ([] if mode == "websocket" else ["websocket"])
    if name == "node":
        assert out["handshake"]["maxPayload"] == MAX_PAYLOAD
    if mode == "upgrade":
        assert out["upgrade"]["ok"] is True, out["upgrade"]
    assert out["transport"] == FINAL_TRANSPORT[mode]
    assert out["received"] == expected_client_received(ALL_STEPS)
    assert out["pings_idle"] >= PINGS and out["pings"] >= PINGS

    assert seen.received == expected_server_received(ALL_STEPS, "client")
    assert seen.transport == FINAL_TRANSPORT[mode]
    assert seen.pongs is not None and seen.pongs >= PINGS
    if seen.pings is not None:
        assert seen.pings >= PINGS
    if server_kind == "node-ref":
        # Node reports every client-initiated close as "transport close".
        assert seen.reason == "transport close"
    elif mode == "polling":
        # Both clients end a polling session with a `1` packet.
        assert seen.reason == "client close"
    else:
        # engine.io-client just closes the WebSocket; python-engineio sends `1` and
        # closes the WebSocket without waiting, so either signal may arrive first.
        assert seen.reason in ("client close", "transport close")
    expected_client_reason = {"node": "forced close", "pye": "client disconnect"}[name]
    assert out["close"]["reason"] == expected_client_reason


@pytest.mark.parametrize("mode", list(MODES))
async def test_server_closes(server_kind: str, client: tuple[str, str], mode: str) -> None:
    """The server sends 20 messages then closes: the client gets all of them, then the close."""
    name, executable = client
    with trio.fail_after(TEST_TIMEOUT):
        async with start_server(server_kind) as server:
            command, cwd = client_command(name, executable, make_config(server.port, mode, ["basic"], "server"))
            out = await run_client(command, cwd)
            seen: ServerSide = await server.session_done()

    assert_client_ok(out)
    assert out["transport"] == FINAL_TRANSPORT[mode]
    assert out["received"] == expected_client_received(["basic"], "server")
    assert seen.received == expected_server_received(["basic"], "server")
    assert seen.reason == "forced close"
    if name == "node":
        assert out["close"]["reason"] == "transport close"
    elif FINAL_TRANSPORT[mode] == "polling":
        assert out["close"]["reason"] == "server disconnect"  # it got the `1` packet
    else:
        # Node and volleyio close the WebSocket with a close frame, no `1` packet; that is
        # what python-engineio calls a transport error.
        assert out["close"]["reason"] == "transport error"


@pytest.mark.parametrize("mode", list(MODES))
async def test_max_payload_boundary(server_kind: str, client: tuple[str, str], mode: str) -> None:
    """A packet of exactly maxPayload bytes goes through; one byte more ends the session
    (413 on polling, close 1009 on WebSocket), as with Node's server."""
    name, executable = client
    with trio.fail_after(TEST_TIMEOUT):
        async with start_server(server_kind) as server:
            command, cwd = client_command(name, executable, make_config(server.port, mode, ["limit"], "oversize"))
            out = await run_client(command, cwd)
            seen: ServerSide = await server.session_done()

    assert_client_ok(out)
    assert out["transport"] == FINAL_TRANSPORT[mode]
    assert out["received"] == expected_client_received(["limit"])
    assert seen.received == expected_server_received(["limit"], "oversize")
    if server_kind == "volleyio":
        assert seen.reason == "message too big"
    else:
        # Node answers 413 but keeps a polling session: it ends when the client gives up
        # (engine.io-client aborts its GET) or by "ping timeout" (python-engineio just stops).
        assert seen.reason in ("transport error", "transport close", "ping timeout")
    # Over polling the client sees either its POST fail (413) or the server's `1` first.
    client_reasons = {"node": ("transport error", "transport close"), "pye": ("transport error", "server disconnect")}
    assert out["close"]["reason"] in client_reasons[name]


@pytest.mark.parametrize("mode", list(MODES))
async def test_frozen_client_ping_timeout(server_kind: str, client: tuple[str, str], mode: str, tmp_path: Path) -> None:
    """A client that stops answering (SIGSTOP) is dropped with "ping timeout"; once resumed
    it learns the session is gone and closes."""
    name, executable = client
    with trio.fail_after(TEST_TIMEOUT):
        async with start_server(server_kind) as server:
            command, cwd = client_command(name, executable, make_config(server.port, mode, ["basic"], "wait"))
            with open(tmp_path / "stderr.txt", "wb") as stderr:
                process = await trio.lowlevel.open_process(command, cwd=str(cwd), stdout=subprocess.PIPE, stderr=stderr)
            try:
                assert process.stdout is not None
                buf = b""
                # Complete lines only: the last piece may be cut mid-line.
                while not any(line.startswith(b"{") and json.loads(line).get("event") == "ready"
                              for line in buf.split(b"\n")[:-1]):
                    chunk = await process.stdout.receive_some(65536)
                    assert chunk, f"client exited early: {buf.decode()} {(tmp_path / 'stderr.txt').read_text()}"
                    buf += chunk
                process.send_signal(signal.SIGSTOP)
                try:
                    seen: ServerSide = await server.session_done()
                finally:
                    process.send_signal(signal.SIGCONT)
                while chunk := await process.stdout.receive_some(65536):
                    buf += chunk
                await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()  # only the process this test started
                    with trio.CancelScope(shield=True):
                        await process.wait()

    lines = [json.loads(line) for line in buf.decode().splitlines() if line.startswith("{")]
    out = [line for line in lines if line.get("event") == "done"][-1]
    assert out["error"] is None and process.returncode == 0, (out, (tmp_path / "stderr.txt").read_text()[-2000:])
    assert out["received"] == expected_client_received(["basic"])
    assert seen.received == expected_server_received(["basic"], "client")
    assert seen.reason == "ping timeout"
    assert out["close"] is not None


async def test_upgrade_during_flood(server_kind: str, node: str) -> None:
    """engine.io-client starts 200 messages each way right after the handshake, so the
    polling → WebSocket switch happens while they are in flight: none lost, none reordered."""
    steps = ["basic", "flood"]
    with trio.fail_after(TEST_TIMEOUT):
        async with start_server(server_kind) as server:
            config = make_config(server.port, "default", steps, "client") | {"early_flood": True}
            command, cwd = client_command("node", node, config)
            out = await run_client(command, cwd)
            seen: ServerSide = await server.session_done()

    assert_client_ok(out)
    assert out["upgrade"]["ok"] is True, out["upgrade"]
    assert out["transport"] == "websocket"
    assert out["received"] == expected_client_received(steps)
    assert seen.received == expected_server_received(steps, "client")
    assert seen.transport == "websocket"


# -------------------------------------------------------------- upgrade blocked by a proxy


class BlockingProxy:
    """A loopback HTTP proxy that forwards plain requests (long-polling) to ``upstream``
    and blocks WebSocket upgrades: ``"400"`` answers them 400, ``"drop"`` closes the
    connection without an answer. Each client connection gets its own upstream
    connection; requests are forwarded one at a time (HTTP/1.1 without pipelining)."""

    def __init__(self, upstream_port: int, block: Literal["400", "drop"]) -> None:
        self.upstream_port = upstream_port
        self.block = block
        self.port = 0
        self.forwarded = 0
        self.upgrades_blocked = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    @staticmethod
    async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(bytes(await stream.receive_some(65536)))

    async def _read_body(self, conn: h11.Connection, stream: trio.abc.Stream) -> bytes:
        body = bytearray()
        while True:
            event = await self._next_event(conn, stream)
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                raise AssertionError(f"unexpected {event!r} in a body")

    async def _handle(self, downstream: trio.SocketStream) -> None:
        down = h11.Connection(h11.SERVER)
        upstream: trio.SocketStream | None = None
        up = h11.Connection(h11.CLIENT)
        try:
            while True:
                request = await self._next_event(down, downstream)
                if not isinstance(request, h11.Request):
                    return  # ConnectionClosed or garbage: stop serving this client
                headers = [(name.lower(), value.lower()) for name, value in request.headers]
                if (b"upgrade", b"websocket") in headers:
                    self.upgrades_blocked += 1
                    if self.block == "400":
                        body = b"WebSocket upgrades are not allowed here"
                        await downstream.send_all(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                            + b"Content-Length: %d\r\n\r\n" % len(body) + body
                        )
                    return
                body = await self._read_body(down, downstream)
                if upstream is None:
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
                    up = h11.Connection(h11.CLIENT)
                out = up.send(h11.Request(method=request.method, target=request.target, headers=request.headers))
                out += up.send(h11.Data(data=body)) if body else b""
                out += up.send(h11.EndOfMessage())
                await upstream.send_all(out)
                response = await self._next_event(up, upstream)
                while isinstance(response, h11.InformationalResponse):
                    response = await self._next_event(up, upstream)
                assert isinstance(response, h11.Response), response
                response_body = await self._read_body(up, upstream)
                back = down.send(h11.Response(status_code=response.status_code, headers=response.headers,
                                              reason=response.reason))
                back += down.send(h11.Data(data=response_body)) if response_body else b""
                back += down.send(h11.EndOfMessage())
                await downstream.send_all(back)
                self.forwarded += 1
                if up.our_state is h11.DONE and up.their_state is h11.DONE:
                    up.start_next_cycle()
                else:
                    await upstream.aclose()
                    upstream = None
                if down.our_state is not h11.DONE or down.their_state is not h11.DONE:
                    return
                down.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return  # a client or the server went away mid-request
        finally:
            await downstream.aclose()
            if upstream is not None:
                await upstream.aclose()


@pytest.mark.parametrize("block", ["400", "drop"])
async def test_upgrade_blocked_by_proxy(
    server_kind: str, client: tuple[str, str], block: Literal["400", "drop"]
) -> None:
    """Default (upgrade) mode through a proxy that refuses WebSocket: the session keeps
    working over polling, 200 numbered messages each way arrive in order."""
    name, executable = client
    steps = ["basic", "flood"]
    with trio.fail_after(TEST_TIMEOUT):
        async with start_server(server_kind) as server, trio.open_nursery() as nursery:
            proxy = BlockingProxy(server.port, block)
            await nursery.start(proxy.run)
            command, cwd = client_command(name, executable, make_config(proxy.port, "default", steps, "client"))
            out = await run_client(command, cwd)
            seen: ServerSide = await server.session_done()
            nursery.cancel_scope.cancel()

    assert_client_ok(out)
    assert proxy.upgrades_blocked >= 1  # the client did try to upgrade
    assert proxy.forwarded > 0
    assert out["upgrade"]["ok"] is False, out["upgrade"]
    assert out["transport"] == "polling"
    assert out["received"] == expected_client_received(steps)
    assert seen.received == expected_server_received(steps, "client")
    assert seen.transport == "polling"
    if server_kind == "volleyio":
        assert seen.reason == "client close"



# ------------------------------------------------------- heartbeat while the pong is late


async def http_request(port: int, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on its own connection (plain loopback HTTP/1.1)."""
    conn = h11.Connection(h11.CLIENT)
    headers = [("Host", f"127.0.0.1:{port}"), ("Connection", "close"), ("Content-Length", str(len(body)))]
    if method == "POST":
        headers.append(("Content-Type", "text/plain;charset=UTF-8"))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(conn.send(h11.Request(method=method, target=target, headers=headers))
                              + (conn.send(h11.Data(data=body)) if body else b"") + conn.send(h11.EndOfMessage()))
        status = 0
        data = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(data)
            else:
                raise AssertionError(f"unexpected {event!r}")


async def test_late_pong_after_other_packets(server_kind: str) -> None:
    """Node's server (engine.io 6.6, ``Socket.onPacket``) refreshes the ping timeout once
    when any other packet arrives while it waits for the pong: a client whose pong is
    queued behind its own data is not dropped. Scripted at the wire level over polling,
    with pingTimeout 1.5 s: after the ping the client POSTs a message at +1.0 s and the
    pong at +2.0 s. The original deadline (+1.5 s) has passed by then, the refreshed one
    (+2.5 s) has not: each side has a 0.5 s margin."""
    timeout_ms = 1500
    with trio.fail_after(TEST_TIMEOUT):
        async with start_server(server_kind, ping_timeout_ms=timeout_ms) as server:
            base = "/engine.io/?EIO=4&transport=polling"
            status, body = await http_request(server.port, "GET", base)
            assert status == 200 and body.startswith(b"0"), body
            sid = json.loads(body[1:])["sid"]
            url = f"{base}&sid={sid}"
            status, body = await http_request(server.port, "GET", url)
            assert (status, body) == (200, b"2"), body
            pinged_at = trio.current_time()
            await trio.sleep_until(pinged_at + timeout_ms / 1000 * 2 / 3)
            assert await http_request(server.port, "POST", url, b"4busy") == (200, b"ok")
            await trio.sleep_until(pinged_at + timeout_ms / 1000 * 4 / 3)
            pong = await http_request(server.port, "POST", url, b"3")
            status, body = await http_request(server.port, "GET", url)
            # Still open: the echo of "busy" is waiting (not `1`, not 400 "Session ID unknown").
            assert (status, body.split(b"\x1e")[0]) == (200, b"4busy"), (pong, status, body)
            assert pong == (200, b"ok")
            await http_request(server.port, "POST", url, b"1")
            seen: ServerSide = await server.session_done()
    assert seen.received == [describe("busy")]
    assert seen.reason == ("client close" if server_kind == "volleyio" else "transport close")
