"""The trio Engine.IO client (``connect_engineio``) against Node's ``engine.io`` server
(tests/js/eio_server.js) and volleyio's own (``serve_engineio``) in polling-only,
WebSocket-only and upgrade modes, and against small fake servers for the failure paths
(ping timeout, dropped keep-alive connections, bad handshakes)."""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h11
import pytest
import trio

from _trio_support import JS_DIR, TEST_TIMEOUT, Certs, free_port, node_path, require_peer
from volleyio.engineio import ServerConfig
from volleyio.trio import (
    ConnectError,
    EngineIOClosed,
    EngineIOConnectError,
    EngineIOSession,
    EngineIOUpgradeError,
    connect_engineio,
    serve_engineio,
)

MODES: dict[str, dict[str, Any]] = {
    "polling": {"transports": ("polling",)},
    "websocket": {"transports": ("websocket",)},
    "upgrade": {},
}
FAST_PINGS = {"pingInterval": 300, "pingTimeout": 200}
PEERS = [pytest.param("node", marks=pytest.mark.interop), "volleyio"]


def _node_eio_available() -> bool:
    return node_path() is not None and (JS_DIR / "node_modules" / "engine.io").is_dir()


@pytest.fixture
def node() -> str:
    require_peer(_node_eio_available(), "node with tests/js/node_modules/engine.io (run npm ci in tests/js)")
    path = node_path()
    assert path is not None
    return path


@asynccontextmanager
async def node_eio_server(node: str, **options: Any) -> AsyncIterator[str]:
    """Run tests/js/eio_server.js with ``options``; yields its base URL."""
    process = await trio.lowlevel.open_process(
        [node, "eio_server.js", json.dumps(options)], cwd=str(JS_DIR), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        buf = b""
        with trio.fail_after(10):
            while b"\n" not in buf:
                chunk = await process.stdout.receive_some(1024)
                assert chunk, "node engine.io server exited before listening"
                buf += chunk
        port = int(json.loads(buf.split(b"\n", 1)[0])["port"])
        yield f"http://127.0.0.1:{port}"
    finally:
        with trio.CancelScope(shield=True):
            assert process.stdin is not None
            await process.stdin.aclose()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()  # only the process this test started
                await process.wait()


@asynccontextmanager
async def volleyio_eio_server(ssl_context: ssl.SSLContext | None = None, **options: Any) -> AsyncIterator[str]:
    """``serve_engineio`` with the same commands as tests/js/eio_server.js ("info" gives
    ``pongs`` as the count of non-message packets received: pongs plus upgrade packets)."""
    state: dict[str, Any] = {"lastClose": None}

    async def handler(session: EngineIOSession) -> None:
        try:
            await serve_commands(session)
        except EngineIOClosed:
            pass  # a reply to a message that came with the close packet
        state["lastClose"] = session.disconnect_reason

    async def serve_commands(session: EngineIOSession) -> None:
        first_transport = session.transport
        async for message in session:
            if message == "close me":
                await session.close()
            elif message == "send binary":
                await session.send(b"\x00\x01\x02\x03\xff")
            elif message == "info":
                stats = session.statistics()
                await session.send(json.dumps({
                    "transport": session.transport,
                    "pongs": stats["packets_in"] - stats["messages_in"],
                    "upgraded": first_transport == "polling" and session.transport == "websocket",
                    "lastClose": state["lastClose"],
                }))
            elif isinstance(message, str) and message.startswith("send big "):
                await session.send("x" * int(message.rsplit(" ", 1)[1]))
            elif isinstance(message, str) and message.startswith("send ") and message[5:].isdigit():
                for i in range(int(message[5:])):
                    await session.send(f"msg-{i}")
            else:
                await session.send(message)

    config = ServerConfig(
        ping_interval_ms=options.get("pingInterval", 25_000),
        ping_timeout_ms=options.get("pingTimeout", 20_000),
        transports=tuple(options.get("transports", ("polling", "websocket"))),
        max_payload=10_000_000,
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve_engineio, handler, "127.0.0.1", 0, config=config, ssl_context=ssl_context)
        )
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{server.port}"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def eio_server(peer: str, **options: Any) -> AsyncIterator[str]:
    if peer == "volleyio":
        async with volleyio_eio_server(**options) as url:
            yield url
        return
    require_peer(_node_eio_available(), "node with tests/js/node_modules/engine.io (run npm ci in tests/js)")
    path = node_path()
    assert path is not None
    async with node_eio_server(path, **options) as url:
        yield url


async def _info(eio: Any) -> dict[str, Any]:
    await eio.send("info")
    reply = await eio.receive()
    assert isinstance(reply, str)
    data: dict[str, Any] = json.loads(reply)
    return data


# ------------------------------------------------------------------ against Node engine.io


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("mode", list(MODES))
async def test_echo_text_and_binary(peer: str, mode: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer) as url, connect_engineio(url, **MODES[mode]) as eio:
            assert eio.sid and eio.handshake["sid"] == eio.sid
            assert set(eio.handshake) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
            assert eio.transport == ("websocket" if mode == "websocket" else "polling")
            await eio.send("hello é")
            assert await eio.receive() == "hello é"
            await eio.send(b"\x00\x01\xff")
            assert await eio.receive() == b"\x00\x01\xff"
            await eio.send(bytearray(b"\x02"))
            assert await eio.receive() == b"\x02"
            await eio.send("send binary")
            assert await eio.receive() == b"\x00\x01\x02\x03\xff"
            if mode == "upgrade":
                await eio.wait_upgraded()
            info = await _info(eio)
            expected = "polling" if mode == "polling" else "websocket"
            assert info["transport"] == expected and eio.transport == expected
            assert info["upgraded"] is (mode == "upgrade")
            stats = eio.statistics()
            assert stats["transport"] == expected and stats["messages_sent"] == 5


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("mode", list(MODES))
async def test_large_payloads(peer: str, mode: str) -> None:
    big_text = "é" * 250_000  # 500 KB of UTF-8
    big_binary = bytes(range(256)) * 2000  # 512,000 bytes (683 KB of base64 over polling)
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer) as url, connect_engineio(url, **MODES[mode]) as eio:
            await eio.send(big_text)
            await eio.send(big_binary)
            await eio.send("send big 600000")
            assert await eio.receive() == big_text
            assert await eio.receive() == big_binary
            assert await eio.receive() == "x" * 600_000


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("mode", list(MODES))
async def test_many_messages_in_order_with_backpressure(peer: str, mode: str) -> None:
    """Sent right after the handshake, so in upgrade mode they cross the upgrade: none
    may be lost, duplicated or reordered, in either direction. Small send buffer and
    receive queue, so both kinds of backpressure kick in."""
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer) as url, connect_engineio(url, max_buffer=64, max_queue=8, **MODES[mode]) as eio:
            await eio.send("send 300")
            for i in range(300):
                await eio.send(f"c-{i}")
            received = [await eio.receive() for _ in range(600)]
            from_server = [m for m in received if isinstance(m, str) and m.startswith("msg-")]
            echoed = [m for m in received if isinstance(m, str) and m.startswith("c-")]
            assert from_server == [f"msg-{i}" for i in range(300)]
            assert echoed == [f"c-{i}" for i in range(300)]
            if mode == "upgrade":
                await eio.wait_upgraded()
                await eio.send("after")
                assert await eio.receive() == "after"


@pytest.mark.parametrize("peer", PEERS)
async def test_messages_cross_the_upgrade(peer: str) -> None:
    """Keep sending until the transport switches (so messages are queued before, while
    polling is paused, and after), while the server streams its own: every message
    arrives once, in order."""
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer) as url, connect_engineio(url, max_buffer=16) as eio:
            await eio.send("send 1000")
            sent = 0
            while eio.transport != "websocket":
                assert sent < 20_000, "the upgrade never completed"
                await eio.send(f"c-{sent}")
                sent += 1
            for _ in range(20):
                await eio.send(f"c-{sent}")
                sent += 1
            received = [await eio.receive() for _ in range(1000 + sent)]
            assert [m for m in received if str(m).startswith("msg-")] == [f"msg-{i}" for i in range(1000)]
            assert [m for m in received if str(m).startswith("c-")] == [f"c-{i}" for i in range(sent)]
            assert eio.statistics()["upgrade"] == "done" and eio.statistics()["polls"] >= 1


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("mode", list(MODES))
async def test_heartbeat_keeps_session_alive(peer: str, mode: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer, **FAST_PINGS) as url, connect_engineio(url, **MODES[mode]) as eio:
            assert eio.handshake["pingInterval"] == 300 and eio.handshake["pingTimeout"] == 200
            # Five intervals: a missed pong would have closed the session (after 500 ms).
            await trio.sleep(1.5)
            info = await _info(eio)
            assert info["pongs"] >= 2
            assert eio.statistics()["pings_received"] >= 2
            assert not eio.closed


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("mode", list(MODES))
async def test_server_closes(peer: str, mode: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer) as url, connect_engineio(url, **MODES[mode]) as eio:
            await eio.send("before")
            await eio.send("close me")
            await eio.drain()
            assert eio.buffered_amount == 0
            assert [m async for m in eio] == ["before"]
            with pytest.raises(EngineIOClosed) as info:
                await eio.receive()
            assert info.value.reason == "transport close" and eio.close_reason == "transport close"
            with pytest.raises(EngineIOClosed):
                await eio.send("late")


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("mode", list(MODES))
async def test_client_closes(peer: str, mode: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer) as url:
            async with connect_engineio(url, **MODES[mode]) as eio:
                await eio.send("one")
                assert await eio.receive() == "one"
                await eio.close()
                with pytest.raises(EngineIOClosed) as info:
                    await eio.send("late")
                assert info.value.reason == "forced close"
            # The server saw the close packet: the next session reports why the last ended.
            async with connect_engineio(url, **MODES[mode]) as again:
                with trio.fail_after(5):
                    while (await _info(again))["lastClose"] is None:
                        await trio.sleep(0.05)
                assert (await _info(again))["lastClose"] in ("transport close", "client close", "forced close")


@pytest.mark.parametrize("peer", PEERS)
async def test_leaving_the_block_closes_the_session(peer: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer) as url:
            async with connect_engineio(url, transports=("polling",)) as eio:
                await eio.send("x")
            assert eio.close_reason == "forced close"
            async with connect_engineio(url, transports=("polling",)) as again:
                with trio.fail_after(5):
                    while (await _info(again))["lastClose"] is None:
                        await trio.sleep(0.05)


@pytest.mark.interop
@pytest.mark.parametrize("how", ["refuse", "drop", "hang"])
async def test_node_broken_websocket_keeps_polling(node: str, how: str) -> None:
    """The handshake offers websocket but the WebSocket request is refused (403), its
    connection dropped, or never answered (upgrade_timeout): the upgrade fails and the
    session carries on over polling with nothing lost."""
    with trio.fail_after(TEST_TIMEOUT):
        async with node_eio_server(node, breakWebSocket=how, **FAST_PINGS) as url, \
                connect_engineio(url, upgrade_timeout=1.0) as eio:
            assert eio.handshake["upgrades"] == ["websocket"]
            for i in range(50):
                await eio.send(f"m{i}")
            with pytest.raises(EngineIOUpgradeError):
                await eio.wait_upgraded()
            for i in range(50, 100):
                await eio.send(f"m{i}")
            assert [await eio.receive() for _ in range(100)] == [f"m{i}" for i in range(100)]
            await trio.sleep(0.8)  # heartbeats still answered over polling
            assert (await _info(eio))["transport"] == "polling"
            assert eio.transport == "polling" and eio.statistics()["upgrade"] == "failed"


@pytest.mark.parametrize("peer", PEERS)
async def test_polling_only_server_no_upgrade(peer: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer, transports=["polling"]) as url, connect_engineio(url) as eio:
            assert eio.handshake["upgrades"] == []
            with pytest.raises(EngineIOUpgradeError):
                await eio.wait_upgraded()
            await eio.send("still here")
            assert await eio.receive() == "still here"


@pytest.mark.parametrize("peer", PEERS)
async def test_upgrade_disabled(peer: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer) as url, connect_engineio(url, upgrade=False) as eio:
            with pytest.raises(EngineIOUpgradeError):
                await eio.wait_upgraded()
            assert (await _info(eio))["transport"] == "polling"


@pytest.mark.parametrize("peer", PEERS)
async def test_refuses_handshake_with_status_and_body(peer: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with eio_server(peer, transports=["websocket"]) as url:
            with pytest.raises(EngineIOConnectError) as info:
                async with connect_engineio(url, transports=("polling",)):
                    pytest.fail("the handshake must fail")
            assert info.value.status == 400 and b"Transport unknown" in info.value.body
            with pytest.raises(ConnectError):
                async with connect_engineio(url, path="/nope/", transports=("websocket",)):
                    pytest.fail("the handshake must fail")


@pytest.mark.parametrize("mode", list(MODES))
async def test_tls(tmp_path: Path, mode: str) -> None:
    certs = Certs(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        async with volleyio_eio_server(ssl_context=certs.server_context) as url:
            assert url.startswith("https://")
            async with connect_engineio(url, ssl_context=certs.client_context, **MODES[mode]) as eio:
                await eio.send("over tls")
                await eio.send(b"\x01" * 100_000)
                assert await eio.receive() == "over tls"
                assert await eio.receive() == b"\x01" * 100_000
                if mode == "upgrade":
                    await eio.wait_upgraded()
                    await eio.send("wss")
                    assert await eio.receive() == "wss"
            with pytest.raises(ConnectError):  # the default context does not trust the test CA
                async with connect_engineio(url, **MODES[mode]):
                    pytest.fail("an untrusted certificate must be refused")


# ------------------------------------------------------------------ fake servers (no peer needed)


async def test_ws_url_and_url_query() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with volleyio_eio_server() as url:
            ws_url = url.replace("http://", "ws://") + "/?extra=1"
            for mode in MODES.values():
                async with connect_engineio(ws_url, **mode) as eio:
                    await eio.send("via ws://")
                    assert await eio.receive() == "via ws://"


async def test_connection_refused_is_connect_error() -> None:
    port = free_port()
    with trio.fail_after(TEST_TIMEOUT):
        for transports in (("polling",), ("websocket",)):
            with pytest.raises(ConnectError):
                async with connect_engineio(f"http://127.0.0.1:{port}", transports=transports):
                    pytest.fail("nothing listens there")


class FakePollingServer:
    """A minimal Engine.IO polling server: answers the handshake, then either pings
    and echoes (``pings=True``) or parks every GET forever (a server gone silent).
    ``close_connections`` answers every request with ``Connection: close``."""

    def __init__(self, *, pings: bool, close_connections: bool, open_body: bytes | None = None) -> None:
        self.pings = pings
        self.close_connections = close_connections
        self.open_body = open_body or (
            b'0{"sid":"fake","upgrades":[],"pingInterval":200,"pingTimeout":200,"maxPayload":100000}'
        )
        self.requests: list[tuple[str, str]] = []
        self.headers: list[dict[bytes, bytes]] = []
        self.connections = 0
        self.received: list[bytes] = []
        self._outbox: list[bytes] = []
        self._outbox_ready = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if not isinstance(event, h11.Request):
                    return
                body = b""
                while True:
                    part = conn.next_event()
                    if part is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(part, h11.Data):
                        body += part.data
                    else:
                        break
                method, target = event.method.decode(), event.target.decode()
                self.requests.append((method, target))
                self.headers.append(dict(event.headers))
                status, answer = await self._answer(method, target, body)
                headers = [("Content-Type", "text/plain; charset=UTF-8"), ("Content-Length", str(len(answer)))]
                if self.close_connections:
                    headers.append(("Connection", "close"))
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                await stream.send_all(conn.send(h11.Data(data=answer)) or b"")
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.ProtocolError):
            return
        finally:
            await stream.aclose()

    async def _answer(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        if "sid=" not in target:
            return 200, self.open_body
        if method == "POST":
            for packet in body.split(b"\x1e"):
                self.received.append(packet)
                if packet.startswith(b"4"):
                    self._outbox.append(packet)
                    self._outbox_ready.set()
            return 200, b"ok"
        if not self.pings:
            await trio.sleep_forever()
        with trio.move_on_after(0.1):
            await self._outbox_ready.wait()
        packets, self._outbox = self._outbox or [b"2"], []
        self._outbox_ready = trio.Event()
        return 200, b"\x1e".join(packets)


@asynccontextmanager
async def fake_server(fake: FakePollingServer) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, fake.handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def test_silent_server_is_ping_timeout() -> None:
    fake = FakePollingServer(pings=False, close_connections=False)
    with trio.fail_after(TEST_TIMEOUT):
        async with fake_server(fake) as url, connect_engineio(url) as eio:
            with pytest.raises(EngineIOClosed) as info:
                await eio.receive()
            assert info.value.reason == "ping timeout"


async def test_reconnects_when_the_server_closes_each_connection() -> None:
    fake = FakePollingServer(pings=True, close_connections=True)
    with trio.fail_after(TEST_TIMEOUT):
        async with fake_server(fake) as url, \
                connect_engineio(url, query={"token": "t1"}, headers=[("X-Token", "abc")]) as eio:
            for i in range(5):
                await eio.send(f"m{i}")
                assert await eio.receive() == f"m{i}"
            await trio.sleep(0.5)  # pings arrive and are answered on new connections
            await eio.send("last")
            assert await eio.receive() == "last"
            stats = eio.statistics()
            assert stats["http_connections"] >= 4 and not eio.closed
    assert fake.connections >= 4
    assert b"3" in fake.received  # pongs
    assert all("token=t1" in target and "EIO=4" in target for _, target in fake.requests)
    assert all(headers.get(b"x-token") == b"abc" for headers in fake.headers)
    assert fake.received[-1] == b"1"  # the close packet, sent on leaving the block


@pytest.mark.parametrize(
    "body", [b"4not-open", b"0{}", b"\xff\xfe"],
)
async def test_bad_handshake_answer_is_connect_error(body: bytes) -> None:
    fake = FakePollingServer(pings=True, close_connections=False, open_body=body)
    with trio.fail_after(TEST_TIMEOUT):
        async with fake_server(fake) as url:
            with pytest.raises(EngineIOConnectError) as info:
                async with connect_engineio(url):
                    pytest.fail("the handshake must fail")
            assert info.value.status == 200 and info.value.body == body


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        async with connect_engineio("http://127.0.0.1:1", transports=("carrier-pigeon",)):
            pytest.fail("not a transport")


# ------------------------------------------------------------------ against python-engineio

PYE_SERVER = r"""
import asyncio, sys
import engineio
from aiohttp import web

eio = engineio.AsyncServer(async_mode="aiohttp", ping_interval=1, ping_timeout=5, max_http_buffer_size=10_000_000)
app = web.Application()
eio.attach(app)

@eio.on("message")
async def message(sid, data):
    if data == "close me":
        await eio.disconnect(sid)
    elif isinstance(data, str) and data.startswith("send ") and data[5:].isdigit():
        for i in range(int(data[5:])):
            await eio.send(sid, f"msg-{i}")
    else:
        await eio.send(sid, data)

async def main():
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()

asyncio.run(main())
"""


def _pye_available() -> bool:
    try:
        import aiohttp  # noqa: F401
        import engineio  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


@asynccontextmanager
async def pye_server() -> AsyncIterator[str]:
    import sys

    require_peer(_pye_available(), "python-engineio and aiohttp")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", PYE_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        buf = b""
        with trio.fail_after(15):
            while b"\n" not in buf:
                chunk = await process.stdout.receive_some(1024)
                assert chunk, "python-engineio server exited before listening"
                buf += chunk
        port = int(buf.split(b"\n", 1)[0])
        yield f"http://127.0.0.1:{port}"
    finally:
        with trio.CancelScope(shield=True):
            assert process.stdin is not None
            await process.stdin.aclose()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()  # only the process this test started
                await process.wait()


@pytest.mark.interop
@pytest.mark.parametrize("mode", list(MODES))
async def test_python_engineio_server(mode: str) -> None:
    """python-engineio refuses POST payloads of more than 16 packets: 100 messages sent
    at once over polling must go out in batches the server accepts."""
    with trio.fail_after(TEST_TIMEOUT):
        async with pye_server() as url, connect_engineio(url, **MODES[mode]) as eio:
            for i in range(100):
                await eio.send(f"c-{i}")
            await eio.send(b"\x00\xff")
            await eio.send("send 40")
            received = [await eio.receive() for _ in range(141)]
            assert received[:101] == [f"c-{i}" for i in range(100)] + [b"\x00\xff"]
            assert received[101:] == [f"msg-{i}" for i in range(40)]
            if mode == "upgrade":
                await eio.wait_upgraded()
            await eio.send("close me")
            with pytest.raises(EngineIOClosed) as info:
                await eio.receive()
            assert info.value.reason == "transport close"
