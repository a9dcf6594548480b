"""The HTTP front door, LIMITS.md limits, timeouts, backpressure and peer failures."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from volleyio import _speedups
from _trio_support import TEST_TIMEOUT, echo_for, echo_handler, free_port, read_http_response, start_server

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(path: str = "/", extra: str = "", key: str = KEY, version: str = "13") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


async def http_exchange(port: int, request: bytes) -> bytes:
    """Send ``request``; return the response head (and, unless it is 101, the body up to EOF)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                chunk = b""
            if not chunk:
                return data
            data += chunk
        if data.startswith(b"HTTP/1.1 101"):
            return data
        return data + await read_http_response(stream)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


class RawClient:
    """A WebSocket client written by hand, to send what well-behaved clients never do."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    @classmethod
    async def open(cls, port: int, path: str = "/") -> RawClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = cls(stream)
        await stream.send_all(upgrade_request(path))
        while b"\r\n\r\n" not in client.buf:
            chunk = await stream.receive_some(4096)
            assert chunk, "server closed during the handshake"
            client.buf += chunk
        head, client.buf = client.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        return client

    async def send_frame(self, opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> None:
        key = b"\x01\x02\x03\x04" if masked else None
        await self.stream.send_all(_speedups.encode_frame(opcode, payload, fin, 0, key))

    async def read_frame(self) -> tuple[int, bytes] | None:
        """The next frame from the server, or None at EOF."""
        while True:
            frames, consumed, error = _speedups.parse_frames(self.buf, False, -1, 0, False)
            assert error is None, error
            if frames:
                opcode, _fin, _rsv, payload = frames[0]
                first_len = len(_speedups.encode_frame(opcode, payload, _fin, 0, None))
                self.buf = self.buf[first_len:]
                return opcode, bytes(payload)
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk

    async def read_close(self) -> int | None:
        """Read until a close frame (its code) or EOF (None)."""
        while True:
            frame = await self.read_frame()
            if frame is None:
                return None
            if frame[0] == 0x8:
                return struct.unpack("!H", frame[1][:2])[0] if len(frame[1]) >= 2 else 1005

    async def wait_eof(self) -> None:
        while await self.read_frame() is not None:
            pass


# ------------------------------------------------------------------ the HTTP front door


async def test_front_door_statuses() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, {"/ws": echo_handler})
            port = server.port
            plain = await http_exchange(port, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(plain) == 426 and b"upgrade: websocket" in plain.lower()
            assert status_of(await http_exchange(port, upgrade_request("/nope"))) == 404
            assert status_of(await http_exchange(port, upgrade_request("/ws", key="short"))) == 400
            bad_version = await http_exchange(port, upgrade_request("/ws", version="8"))
            assert status_of(bad_version) == 426 and b"sec-websocket-version: 13" in bad_version.lower()
            post = upgrade_request("/ws").replace(b"GET", b"POST", 1)
            assert status_of(await http_exchange(port, post)) == 405  # with Allow: GET
            assert status_of(await http_exchange(port, b"garbage\r\n\r\n")) == 400
            ok = await http_exchange(port, upgrade_request("/ws"))
            assert ok.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in ok
            server.shutdown()


async def test_oversized_heads_are_answered_414_and_431() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery)
            port = server.port
            long_line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            assert status_of(await http_exchange(port, long_line)) == 414
            big_header = upgrade_request("/", extra="X-Big: " + "b" * 17000 + "\r\n")
            assert status_of(await http_exchange(port, big_header)) == 431
            many = "".join(f"X-H{i}: v\r\n" for i in range(130))
            assert status_of(await http_exchange(port, upgrade_request("/", extra=many))) == 431
            # Just under the limits is fine.
            fine = upgrade_request("/", extra="".join(f"X-H{i}: v\r\n" for i in range(100)))
            assert (await http_exchange(port, fine)).startswith(b"HTTP/1.1 101")
            server.shutdown()


async def test_slow_and_idle_handshakes_are_closed_at_the_open_timeout() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, open_timeout=0.3)
            # Headers started but never finished: 408, then the server closes.
            slow = await trio.open_tcp_stream("127.0.0.1", server.port)
            await slow.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            answer = await read_http_response(slow)
            assert status_of(answer) == 408
            # Nothing sent at all: plain TCP close, no response.
            idle = await trio.open_tcp_stream("127.0.0.1", server.port)
            assert await read_http_response(idle) == b""
            await slow.aclose()
            await idle.aclose()
            while server.active_tasks:
                await trio.sleep(0.01)
            server.shutdown()


async def test_process_request_serves_plain_http_and_origin_policy() -> None:
    async def health(request: vt.Request) -> vt.Response | None:
        if request.path == "/health":
            return vt.Response.text(200, "ok\n")
        return None

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            default = await start_server(nursery, process_request=health)
            assert (await http_exchange(default.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"ok\n")
            cross = upgrade_request("/", extra="Origin: http://evil.example\r\n")
            assert status_of(await http_exchange(default.port, cross)) == 403
            same = upgrade_request("/", extra="Origin: http://127.0.0.1\r\n")  # Host: 127.0.0.1
            assert status_of(await http_exchange(default.port, same)) == 101
            listed = await start_server(nursery, origins=["https://app.example"])
            ok = upgrade_request("/", extra="Origin: https://app.example\r\n")
            assert status_of(await http_exchange(listed.port, ok)) == 101
            assert status_of(await http_exchange(listed.port, same)) == 403
            assert status_of(await http_exchange(listed.port, upgrade_request("/"))) == 101  # no Origin
            anyone = await start_server(nursery, origins=["*"])
            assert status_of(await http_exchange(anyone.port, cross)) == 101
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ message limits and bad input


async def test_message_limits_close_1009(handler_style: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style), max_message_size=1000, max_fragments=8)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send(b"x" * 1000)
                assert await ws.receive() == b"x" * 1000
                await ws.send(b"x" * 1001)
                with pytest.raises(vt.ConnectionClosedError) as info:
                    await ws.receive()
                assert info.value.code == 1009
            # Fragments: each small, together over the limit; and too many of them.
            raw = await RawClient.open(server.port)
            for _ in range(3):
                await raw.send_frame(0x2 if _ == 0 else 0x0, b"y" * 400, fin=False)
            assert await raw.read_close() == 1009
            raw = await RawClient.open(server.port)
            for i in range(9):
                await raw.send_frame(0x1 if i == 0 else 0x0, b"z", fin=False)
            assert await raw.read_close() == 1009
            server.shutdown()


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([(0x1, b"\xff\xfe", True, True)], 1007),  # invalid UTF-8
        ([(0x1, b"ok\xed\xa0\x80", True, True)], 1007),  # a surrogate
        ([(0x1, b"abc", True, False)], 1002),  # unmasked client frame
        ([(0x0, b"abc", True, True)], 1002),  # continuation without a message
        ([(0x3, b"", True, True)], 1002),  # reserved opcode
        ([(0x1, b"a", False, True), (0x1, b"b", True, True)], 1002),  # new message inside a fragmented one
        ([(0x8, b"\x03\xe8\xff", True, True)], 1007),  # close reason not UTF-8
        ([(0x8, struct.pack("!H", 999), True, True)], 1002),  # invalid close code
    ],
)
async def test_bad_input_closes_only_that_peer(frames: list[tuple[int, bytes, bool, bool]], code: int, handler_style: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as good:
                raw = await RawClient.open(server.port)
                for opcode, payload, fin, masked in frames:
                    await raw.send_frame(opcode, payload, fin, masked)
                assert await raw.read_close() == code
                await raw.wait_eof()  # the server drops the TCP connection too
                # The other client is not disturbed.
                await good.send("still here")
                assert await good.receive() == "still here"
            server.shutdown()


async def test_text_fragment_fails_fast_on_first_bad_byte(handler_style: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            raw = await RawClient.open(server.port)
            await raw.send_frame(0x1, b"valid", fin=False)
            await raw.send_frame(0x0, b"\xc0", fin=False)  # bad byte; the message never finishes
            assert await raw.read_close() == 1007
            server.shutdown()


# ------------------------------------------------------------------ vanishing peers, timeouts


async def test_peer_reset_and_half_close_free_the_connection() -> None:
    finished: list[int] = []

    async def handler(ws: vt.WebSocketConnection) -> None:
        try:
            await echo_handler(ws)
        except vt.ConnectionClosed as exc:
            finished.append(exc.code)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            # RST: SO_LINGER 0 then close.
            raw = await RawClient.open(server.port)
            await raw.send_frame(0x1, b"hi")
            assert await raw.read_frame() == (0x1, b"hi")
            raw.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await raw.stream.aclose()
            # Half-close: FIN from the client, no close frame.
            half = await RawClient.open(server.port)
            await half.stream.send_eof()
            while server.active_tasks:
                await trio.sleep(0.01)
            assert not server.connections
            server.shutdown()
    assert finished == [1006, 1006]


async def test_keepalive_timeout_closes_1011() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, ping_interval=0.1, ping_timeout=0.2)
            raw = await RawClient.open(server.port)
            # Never answer: read raw frames but send no pong.
            frames: list[int] = []
            while True:
                frame = await raw.read_frame()
                if frame is None:
                    break
                frames.append(frame[0])
                if frame[0] == 0x8:
                    assert struct.unpack("!H", frame[1][:2])[0] == 1011
            assert 0x9 in frames and frames[-1] == 0x8
            while server.active_tasks:
                await trio.sleep(0.01)
            # A client that answers pings stays connected.
            async with vt.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None) as ws:
                for _ in range(3):
                    await ws.send("x")
                    assert await ws.receive() == "x"
                    await trio.sleep(0.15)  # let keepalive pings happen (not an assertion on time)
                assert server.connections
            server.shutdown()


async def test_close_timeout_aborts_an_unresponsive_peer() -> None:
    done = trio.Event()

    async def handler(ws: vt.WebSocketConnection) -> None:
        await ws.close(1000)  # the raw client never answers: aborted at the close timeout
        done.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, close_timeout=0.2)
            raw = await RawClient.open(server.port)
            await done.wait()
            assert await raw.read_close() == 1000
            await raw.wait_eof()
            server.shutdown()


async def test_graceful_shutdown_sends_1001_to_every_client() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as a, \
                    vt.connect(f"ws://127.0.0.1:{server.port}/") as b:
                await a.send("1")
                assert await a.receive() == "1"
                await b.send("2")
                assert await b.receive() == "2"
                server.shutdown()
                for ws in (a, b):
                    with pytest.raises(vt.ConnectionClosedOK) as info:
                        await ws.receive()
                    assert info.value.code == 1001


# ------------------------------------------------------------------ backpressure and fan-out


async def test_inbound_queue_is_bounded_and_pushes_back() -> None:
    got: list[bytes] = []
    total = 200
    size = 64 * 1024

    async def handler(ws: vt.WebSocketConnection) -> None:
        while ws.statistics().inbound_queue < 16:
            await trio.sleep(0.01)
        for _ in range(20):
            await trio.sleep(0.01)  # give the reader every chance to overrun the bound
        stats = ws.statistics()
        # Reading stops at 16; the read that crossed the mark may carry a few more
        # (one 256 KiB read holds at most 4 of these 64 KiB messages).
        assert 16 <= stats.inbound_queue <= 16 + 4
        assert stats.bytes_received < total * size  # it stopped reading: TCP pushes back
        for _ in range(total):
            got.append(await ws.receive())  # type: ignore[arg-type]
        await ws.send("done")

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                for i in range(total):
                    await ws.send(i.to_bytes(4, "big") * (size // 4))
                assert await ws.receive() == "done"
            server.shutdown()
    assert [m[:4] for m in got] == [i.to_bytes(4, "big") for i in range(total)]


async def test_outbound_buffer_is_bounded() -> None:
    samples: list[int] = []
    senders, per_sender, size = 3, 30, 65536
    handler_done = trio.Event()

    async def handler(ws: vt.WebSocketConnection) -> None:
        async def sender(k: int) -> None:
            for i in range(per_sender):
                await ws.send(bytes([k]) * size)

        async def monitor() -> None:
            for _ in range(300):  # bounded sampling while the client does not read
                samples.append(ws.statistics().outbound_buffered)
                await trio.sleep(0)

        async with trio.open_nursery() as inner:
            inner.start_soon(monitor)
            for k in range(senders):
                inner.start_soon(sender, k)
        await ws.send("end")
        handler_done.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, write_limit=64 * 1024)
            raw = await RawClient.open(server.port)
            while len(samples) < 300:
                await trio.sleep(0.01)  # the client does not read yet
            count = 0
            while True:
                frame = await raw.read_frame()
                assert frame is not None
                if frame[0] == 0x1:
                    break
                count += 1
            assert count == senders * per_sender
            await raw.stream.aclose()
            server.shutdown()
    assert max(samples) > 0  # the buffer was in use while the peer did not read...
    assert max(samples) <= 64 * 1024 + senders * (size + 14)  # ...and stayed bounded


async def test_broadcast_frames_once_and_closes_slow_consumers_1008() -> None:
    ready = trio.Event()
    conns: list[vt.WebSocketConnection] = []

    async def handler(ws: vt.WebSocketConnection) -> None:
        conns.append(ws)
        if len(conns) == 2:
            ready.set()
        try:
            async for _ in ws:
                pass
        except vt.ConnectionClosed:
            pass

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/", max_queue=1024) as fast:
                slow = await RawClient.open(server.port)  # never reads until the end
                await ready.wait()
                received: list[Any] = []

                async def drain() -> None:
                    for _ in range(64):
                        received.append(await fast.receive())

                nursery.start_soon(drain)
                for i in range(64):
                    vt.broadcast(server.connections, bytes([i]) * 65536)
                    await trio.sleep(0)
                while len(received) < 64:
                    await trio.sleep(0.01)
                assert [m[0] for m in received] == list(range(64))
                assert await slow.read_close() == 1008
            server.shutdown()


# ------------------------------------------------------------------ API edges


async def test_no_exception_group_leaks_from_connect_and_handler_errors() -> None:
    async def broken(ws: vt.WebSocketConnection) -> None:
        await ws.receive()
        raise RuntimeError("handler bug")

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, broken)
            with pytest.raises(ValueError, match="from the body"):
                async with vt.connect(f"ws://127.0.0.1:{server.port}/"):
                    raise ValueError("from the body")
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send("boom")
                with pytest.raises(vt.ConnectionClosedError) as info:
                    await ws.receive()
                assert info.value.code == 1011
            routed = await start_server(nursery, {"/only": broken})
            with pytest.raises(vt.ConnectError) as refused:
                async with vt.connect(f"ws://127.0.0.1:{routed.port}/other"):
                    pass
            assert refused.value.status == 404
            with pytest.raises(vt.ConnectError):
                async with vt.connect(f"ws://127.0.0.1:{free_port()}/"):
                    pass
            nursery.cancel_scope.cancel()


async def test_ping_is_bounded_by_a_cancel_scope_and_counts(handler_style: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            async with vt.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None) as ws:
                await ws.ping(b"1")
                await ws.ping()
                stats = ws.statistics()
                assert stats.pings_sent == 2 and stats.pongs_received == 2
                assert stats.state == "OPEN"
            assert ws.statistics().state == "CLOSED" and ws.close_code == 1000
            server.shutdown()


async def test_send_after_close_raises_connection_closed(handler_style: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.close()
                with pytest.raises(vt.ConnectionClosedOK):
                    await ws.send("late")
                with pytest.raises(vt.ConnectionClosedOK):
                    await ws.receive()
            server.shutdown()


async def test_pings_are_answered_while_the_application_does_not_receive() -> None:
    release = trio.Event()

    async def handler(ws: vt.WebSocketConnection) -> None:
        assert await ws.receive() == "first"  # the handler read inline once...
        await release.wait()  # ...then stops receiving; its reader task takes the socket back
        await ws.send("released")

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, ping_interval=0.2, ping_timeout=5)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None) as ws:
                await ws.send("first")
                await ws.ping(b"are you there")  # answered by the server's reader task
                release.set()
                assert await ws.receive() == "released"
            server.shutdown()


async def test_concurrent_receivers_share_the_messages() -> None:
    got: list[str] = []

    async def handler(ws: vt.WebSocketConnection) -> None:
        async def one() -> None:
            for _ in range(50):
                got.append(str(await ws.receive()))

        async with trio.open_nursery() as inner:
            inner.start_soon(one)
            inner.start_soon(one)
        await ws.send("all received")

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                for i in range(100):
                    await ws.send(str(i))
                    if i % 7 == 0:
                        await trio.sleep(0.001)
                assert await ws.receive() == "all received"
            server.shutdown()
    assert sorted(got, key=int) == [str(i) for i in range(100)]


async def test_coalesced_replies_are_flushed_when_the_handler_stops_receiving() -> None:
    # Three messages in one TCP segment: the replies to the first two are coalesced
    # (more messages are queued); the handler then waits elsewhere -- the replies
    # must still go out without a further receive() or send().
    async def handler(ws: vt.WebSocketConnection) -> None:
        for _ in range(2):
            await ws.send(b"re:" + await ws.receive())
        await trio.sleep_forever()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            # No keepalive: nothing else would ever write to this connection.
            server = await start_server(nursery, handler, ping_interval=None)
            client = await RawClient.open(server.port)
            key = b"\x01\x02\x03\x04"
            await client.stream.send_all(
                b"".join(_speedups.encode_frame(2, m, True, 0, key) for m in (b"1", b"2", b"3"))
            )
            assert await client.read_frame() == (2, b"re:1")
            assert await client.read_frame() == (2, b"re:2")
            await client.stream.aclose()
            server.shutdown()


async def test_batched_echo_keeps_order_across_many_messages(handler_style: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            client = await RawClient.open(server.port)
            key = b"\x01\x02\x03\x04"
            messages = [str(i).encode() * (1 + i % 7) for i in range(300)]
            await client.stream.send_all(b"".join(_speedups.encode_frame(2, m, True, 0, key) for m in messages))
            for m in messages:
                assert await client.read_frame() == (2, m)
            await client.stream.aclose()
            server.shutdown()
