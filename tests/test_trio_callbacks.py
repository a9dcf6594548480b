"""Callback mode of the trio server (``serve(MessageHandler())``): the connection's own
task reads and calls ``on_open``/``on_message``/``on_close``; replies go out with
``send_nowait``. Checked against our client, the ``websockets`` library, Node's ``ws``
and Chromium, plus the limits: bad input, handler errors, backpressure, slow consumers,
close timeouts and shutdown."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import (
    JS_DIR,
    TEST_TIMEOUT,
    Certs,
    chromium_path,
    needs_websockets_trio,
    node_path,
    node_ws_available,
    playwright_available,
    require_peer,
    start_server,
)
from _trio_support import ws_trio_connect as ws_connect
from volleyio import _speedups


HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Recorder(vt.MessageHandler):
    """Echoes every message and records the callbacks it got, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.connections: list[vt.WebSocketConnection] = []
        self.closed = trio.Event()

    def on_open(self, ws: vt.WebSocketConnection) -> None:
        self.calls.append(("open",))
        self.connections.append(ws)

    def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
        self.calls.append(("message", message))
        assert ws.send_nowait(message)

    def on_close(self, ws: vt.WebSocketConnection) -> None:
        self.calls.append(("close", ws.close_code, ws.close_reason))
        self.closed.set()


async def test_echo_and_callback_order_with_our_client() -> None:
    handler = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send("héllo ✓")
                assert await ws.receive() == "héllo ✓"
                await ws.send(b"\x00\xff")
                assert await ws.receive() == b"\x00\xff"
                for i in range(50):  # many in flight: replies batched per read
                    await ws.send(f"n{i}")
                assert [await ws.receive() for _ in range(50)] == [f"n{i}" for i in range(50)]
                await ws.close(4002, "client bye")
            await handler.closed.wait()
            server.shutdown()
    assert handler.calls[0] == ("open",)
    assert handler.calls[1:3] == [("message", "héllo ✓"), ("message", b"\x00\xff")]
    assert handler.calls[-1] == ("close", 4002, "client bye")
    assert len(handler.calls) == 2 + 2 + 50


@needs_websockets_trio
@pytest.mark.interop
async def test_websockets_client_text_binary_large_fragmented_ping() -> None:
    handler = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with ws_connect(f"ws://127.0.0.1:{server.port}/", compression=None,
                                  max_size=2**21) as ws:
                big = bytes(range(256)) * 4000  # 1,024,000 bytes, under the 1 MiB limit
                await ws.send(big)
                assert await ws.recv() == big
                text = "é" * 300_000
                await ws.send(text)
                assert await ws.recv() == text
                # Fragments are assembled: on_message gets the whole message once.
                await ws.send(["ab", "c€", "d", "😀"])
                assert await ws.recv() == "abc€d😀"
                await ws.send([b"\x01", b"\x02\x03", b""])
                assert await ws.recv() == b"\x01\x02\x03"
                pong = await ws.ping(b"py")
                with trio.fail_after(5):
                    await pong.wait()
            await handler.closed.wait()
            server.shutdown()
    messages = [call[1] for call in handler.calls if call[0] == "message"]
    assert messages == [bytes(range(256)) * 4000, "é" * 300_000, "abc€d😀", b"\x01\x02\x03"]
    assert handler.calls[-1] == ("close", 1000, "")


@needs_websockets_trio
@pytest.mark.interop
async def test_websockets_client_with_compression() -> None:
    handler = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, compression="deflate")
            async with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
                assert ws.protocol.extensions  # permessage-deflate negotiated
                await ws.send("z" * 50_000)
                assert await ws.recv() == "z" * 50_000
                await ws.send(os.urandom(3000))
                assert len(await ws.recv()) == 3000
            await handler.closed.wait()
            server.shutdown()


async def test_too_large_message_closes_1009_and_others_go_on() -> None:
    handler = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, max_message_size=1000)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as good:
                async with vt.connect(f"ws://127.0.0.1:{server.port}/") as bad:
                    await bad.send(b"x" * 1001)
                    with pytest.raises(vt.ConnectionClosed) as info:
                        await bad.receive()
                    assert info.value.code == 1009
                await good.send("still here")
                assert await good.receive() == "still here"
            server.shutdown()
    closes = [call for call in handler.calls if call[0] == "close"]
    assert ("close", 1009, closes[0][2]) == closes[0]


async def test_invalid_utf8_closes_1007() -> None:
    handler = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(HANDSHAKE)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await trio.to_thread.run_sync(sock.recv, 4096)
                assert head.startswith(b"HTTP/1.1 101")
                sock.sendall(_speedups.encode_frame(1, b"\xff\xfe", mask_key=b"abcd"))
                with trio.fail_after(5):
                    await handler.closed.wait()
            server.shutdown()
    assert handler.calls[-1][:2] == ("close", 1007)
    assert not [call for call in handler.calls if call[0] == "message"]


class Failing(Recorder):
    def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
        if message == "boom":
            raise RuntimeError("application bug")
        super().on_message(ws, message)


async def test_exception_in_on_message_closes_1011_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    handler = Failing()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as other:
                async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                    await ws.send("boom")
                    await ws.send("after")  # not delivered: the connection is closing
                    with pytest.raises(vt.ConnectionClosed) as info:
                        await ws.receive()
                    assert (info.value.code, info.value.reason) == (1011, "internal error")
                await other.send("fine")
                assert await other.receive() == "fine"
            server.shutdown()
    assert "on_message failed" in caplog.text
    assert ("message", "after") not in handler.calls


class Closer(Recorder):
    def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
        super().on_message(ws, message)
        if message == "close me":
            ws.close_nowait(4005, "as asked")
            assert not ws.send_nowait("too late")  # nothing after our close frame


async def test_close_nowait_from_callback() -> None:
    handler = Closer()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send("close me")
                assert await ws.receive() == "close me"  # the reply went out before the close
                with pytest.raises(vt.ConnectionClosed) as info:
                    await ws.receive()
                assert (info.value.code, info.value.reason) == (4005, "as asked")
            await handler.closed.wait()
            server.shutdown()
    # The close code is the one of the close frame received (RFC 6455 7.1.5): the echo's.
    assert handler.calls[-1] == ("close", 4005, "")


async def test_close_nowait_bounded_by_close_timeout_when_peer_never_answers() -> None:
    handler = Closer()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, close_timeout=0.5)
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(HANDSHAKE)
                sock.sendall(_speedups.encode_frame(1, b"close me", mask_key=b"abcd"))
                start = trio.current_time()
                with trio.fail_after(5):
                    await handler.closed.wait()  # we never answer the close
                elapsed = trio.current_time() - start
            server.shutdown()
    assert 0.4 <= elapsed < 3
    assert handler.calls[-1][0] == "close"
    assert not server.connections


async def test_receive_is_refused_in_callback_mode() -> None:
    errors: list[BaseException] = []

    class Receiver(Recorder):
        def on_open(self, ws: vt.WebSocketConnection) -> None:
            super().on_open(ws)

            async def try_receive() -> None:
                try:
                    await ws.receive()
                except RuntimeError as exc:
                    errors.append(exc)

            nursery.start_soon(try_receive)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            handler = Receiver()
            server = await start_server(nursery, handler)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send("x")
                assert await ws.receive() == "x"
                while not errors:  # the connection stays open until receive() was tried
                    await trio.sleep(0.01)
            server.shutdown()
    assert len(errors) == 1 and "MessageHandler" in str(errors[0])


async def test_ping_and_send_from_another_task() -> None:
    done = trio.Event()

    class Pinger(Recorder):
        def on_open(self, ws: vt.WebSocketConnection) -> None:
            super().on_open(ws)

            async def ping_then_send() -> None:
                await ws.ping(b"srv")  # the pong is read by the callback task
                await ws.send("pinged")
                done.set()

            nursery.start_soon(ping_then_send)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, Pinger())
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                assert await ws.receive() == "pinged"
                await done.wait()
            server.shutdown()


class BigReplies(Recorder):
    """Answers each 1-byte message with 64 KiB: a client that stops reading must stop
    the server from reading it too, not grow the server's buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.max_buffered = 0

    def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
        self.calls.append(("message", len(message)))
        ws.send_nowait(b"r" * 65536)
        self.max_buffered = max(self.max_buffered, ws.statistics().outbound_buffered)


async def test_backpressure_stops_reading_a_peer_that_does_not_read() -> None:
    handler = BigReplies()
    request = _speedups.encode_frame(2, b"q", mask_key=b"abcd")
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", server.port))
            await sock.send(HANDSHAKE)
            sent = 0
            # Send requests and never read the replies, until TCP pushes back on us.
            with trio.move_on_after(3):
                while sent < 200_000:
                    await sock.send(request * 100)
                    sent += 100
            delivered = len([call for call in handler.calls if call[0] == "message"])
            sock.close()
            with trio.fail_after(5):
                await handler.closed.wait()
            server.shutdown()
    # The server stopped reading: most requests never reached the handler ...
    assert 0 < delivered < sent // 2
    # ... and it never held more than one read's worth of replies (256 KiB of 7-byte
    # requests would be 37,000 replies of 64 KiB without the backlog).
    assert handler.max_buffered <= 2 * (65536 + 10)


async def test_send_nowait_to_a_slow_consumer_closes_it_1008() -> None:
    fanout = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, fanout)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as slow:
                async with vt.connect(f"ws://127.0.0.1:{server.port}/") as fast:
                    await fast.send("hi")
                    assert await fast.receive() == "hi"
                    target = fanout.connections[0]  # the slow one, never reading
                    results = [target.send_nowait(b"s" * 65536, limit=256 * 1024) for _ in range(200)]
                    assert results[0] and not results[-1]
                    assert target.close_code == 1008 and target.close_reason == "slow consumer"
                    await fast.send("others unaffected")
                    assert await fast.receive() == "others unaffected"
                with trio.fail_after(10):
                    with pytest.raises(vt.ConnectionClosed):
                        while True:
                            await slow.receive()
            server.shutdown()


async def test_shutdown_closes_1001_and_runs_on_close() -> None:
    handler = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send("x")
                assert await ws.receive() == "x"
                server.shutdown()
                with pytest.raises(vt.ConnectionClosed) as info:
                    await ws.receive()
                assert info.value.code == 1001
    assert handler.calls[-1][0] == "close" and handler.calls[-1][1] == 1001


async def test_peer_reset_frees_the_connection() -> None:
    handler = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(HANDSHAKE)
            while not handler.connections:
                await trio.sleep(0.01)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # RST
            with trio.fail_after(5):
                await handler.closed.wait()
            while server.connections or server.active_tasks:
                await trio.sleep(0.01)
            server.shutdown()
    assert handler.calls[-1] == ("close", 1006, "")


async def test_tls(tmp_path: Any) -> None:
    certs = Certs(tmp_path)
    handler = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, ssl_context=certs.server_context)
            async with vt.connect(f"wss://127.0.0.1:{server.port}/", ssl_context=certs.client_context) as ws:
                for i in range(20):
                    await ws.send(f"tls {i}")
                assert [await ws.receive() for _ in range(20)] == [f"tls {i}" for i in range(20)]
                await ws.send(b"b" * 200_000)
                assert await ws.receive() == b"b" * 200_000
            await handler.closed.wait()
            server.shutdown()


async def test_mapping_mixes_async_and_callback_handlers() -> None:
    async def upper(ws: vt.WebSocketConnection) -> None:
        async for message in ws:
            await ws.send(str(message).upper())

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, {"/echo": Recorder(), "/upper": upper})
            async with vt.connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
                await ws.send("abc")
                assert await ws.receive() == "abc"
            async with vt.connect(f"ws://127.0.0.1:{server.port}/upper") as ws:
                await ws.send("abc")
                assert await ws.receive() == "ABC"
            server.shutdown()


# ------------------------------------------------------------------ real peers: Node ws, Chromium


@pytest.mark.interop
@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_node_ws_client(compression: str | None) -> None:
    require_peer(node_ws_available(), "node with tests/js/node_modules/ws (run npm ci in tests/js)")
    node = node_path()
    assert node is not None
    handler = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, subprotocols=["chat.v1"], compression=compression)
            result = await trio.run_process(
                [node, "ws_client.js", f"ws://127.0.0.1:{server.port}/", "deflate" if compression else "plain"],
                cwd=str(JS_DIR), capture_stdout=True, capture_stderr=True, check=False,
            )
            await handler.closed.wait()
            server.shutdown()
    out = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert "error" not in out, out
    echoes = out["echoes"]
    assert echoes[0] == {"binary": False, "text": "héllo ✓"}
    assert echoes[1]["binary"] and echoes[1]["hex"] == "000102ff"
    big = bytes(i % 251 for i in range(1_000_000))
    assert (echoes[2]["length"], echoes[2]["sum"]) == (len(big), sum(big) % 65536)
    assert echoes[3] == {"binary": False, "text": "ab€cd"}
    assert echoes[4] == {"binary": False, "text": "x" * 5000}
    assert out["pong"] == "node-ping"
    assert out["close"]["code"] == 4000
    assert handler.calls[-1] == ("close", 4000, "node bye")


PAGE = b"<!doctype html><title>volleyio</title><p>volleyio interop page</p>"


class BrowserHandler(vt.MessageHandler):
    """What tests/js/browser.js expects of the server, in callback form."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.closed: tuple[int | None, str | None] | None = None

    def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
        if message == "server-ping":

            async def ping() -> None:
                await ws.ping(b"to-browser")
                await ws.send("pinged")

            self.nursery.start_soon(ping)
        elif message == "server-close":
            ws.close_nowait(4001, "bye browser")
        else:
            ws.send_nowait(message)

    def on_close(self, ws: vt.WebSocketConnection) -> None:
        self.closed = (ws.close_code, ws.close_reason)


@pytest.mark.interop
@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_chromium(compression: str | None) -> None:
    require_peer(playwright_available(), "node with tests/js/node_modules/playwright-core (npm ci in tests/js)")
    chromium = chromium_path()
    require_peer(chromium is not None, "chromium (scripts/apt-packages.txt)")
    node = node_path()
    assert node is not None and chromium is not None

    async def page(request: vt.Request) -> vt.Response | None:
        if request.path == "/page":
            return vt.Response(200, PAGE, [("content-type", "text/html; charset=utf-8")])
        return None

    with trio.fail_after(TEST_TIMEOUT + 30):
        async with trio.open_nursery() as nursery:
            handler = BrowserHandler(nursery)
            server = await start_server(nursery, {"/ws": handler}, process_request=page,
                                        subprotocols=["chat.v1"], compression=compression)
            base = f"127.0.0.1:{server.port}"
            result = await trio.run_process(
                [node, "browser.js", f"http://{base}/page", f"ws://{base}/ws"], cwd=str(JS_DIR),
                env={**os.environ, "CHROMIUM_PATH": chromium}, capture_stdout=True, capture_stderr=True,
                check=False,
            )
            while handler.closed is None:
                await trio.sleep(0.01)
            server.shutdown()
    out = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert "error" not in out, out
    echoes = out["echoes"]
    assert echoes[0] == {"binary": False, "text": "héllo ✓ from chromium"}
    assert echoes[1]["binary"] and echoes[1]["hex"] == "000102ff"
    big = bytes(i % 251 for i in range(1_000_000))
    assert (echoes[2]["length"], echoes[2]["sum"]) == (len(big), sum(big) % 65536)
    assert echoes[3] == {"binary": False, "text": "y" * 20000}
    assert echoes[4] == {"binary": False, "text": "pinged"}
    assert out["close"] == {"code": 4001, "reason": "bye browser", "wasClean": True}
    assert handler.closed == (4001, "bye browser")
    assert out["extensions"].startswith("permessage-deflate") if compression else out["extensions"] == ""
