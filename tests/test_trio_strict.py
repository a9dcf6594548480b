"""Issue #12 points 3 and 4 through the trio server, in both handler styles (``async def``
and ``MessageHandler``), with and without permessage-deflate, on both speedups twins.

A hand-written client sends what well-behaved clients never do -- several frames in one
write, a violation behind good messages, a header without its payload -- and checks the
order of everything the server writes back. The Autobahn-like cases the issue refers to
(fragmentation with interleaved pings, fail-fast UTF-8, large echoes) are written here as
tests.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import TEST_TIMEOUT, echo_for, start_server
from volleyio import _speedups
from volleyio.websocket.deflate import ClientPerMessageDeflateFactory, ServerPerMessageDeflateFactory
from volleyio.websocket.extensions import parse_extensions_header

KEY = b"\x01\x02\x03\x04"


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, length: int | None = None) -> bytes:
    """A masked client frame; ``length`` overrides the declared payload length."""
    data = _speedups.encode_frame(opcode, payload, fin, rsv, KEY)
    if length is None:
        return data
    head = _speedups.encode_frame(opcode, b"\x00" * length, fin, rsv, KEY)
    return head[: len(head) - length]


class Peer:
    """A raw client: writes bytes as given, reads the server's frames one by one."""

    def __init__(self, stream: trio.SocketStream, deflate: Any) -> None:
        self.stream = stream
        self.deflate = deflate  # the client side's PerMessageDeflate, or None
        self.buf = b""

    @classmethod
    async def open(cls, port: int, deflate: bool = False) -> Peer:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        factory = ClientPerMessageDeflateFactory() if deflate else None
        extra = f"Sec-WebSocket-Extensions: {factory.offer()}\r\n" if factory is not None else ""
        await stream.send_all(
            (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"{extra}\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(4096)
            assert chunk, "server closed during the handshake"
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        ext = None
        if factory is not None:
            line = [h for h in head.decode().split("\r\n") if h.lower().startswith("sec-websocket-extensions:")]
            assert line, "the server did not accept permessage-deflate"
            ((_, params),) = parse_extensions_header([line[0].split(":", 1)[1].strip()])
            ext = factory.accept(params)
        peer = cls(stream, ext)
        peer.buf = rest
        return peer

    def message(self, data: str | bytes, compress: bool = False) -> bytes:
        """One whole message as a client frame (compressed when asked and negotiated)."""
        opcode = 1 if isinstance(data, str) else 2
        payload = data.encode() if isinstance(data, str) else data
        rsv = 0
        if compress:
            assert self.deflate is not None
            payload, rsv = self.deflate.encode_message(payload, opcode, True)
        return frame(opcode, payload, rsv=rsv)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        """Drop TCP (the server then needs no close timeout to let go of us)."""
        await self.stream.aclose()

    async def read(self) -> tuple[int, bytes] | None:
        """The next frame (opcode, payload decoded), or None at EOF."""
        while True:
            frames, consumed, error = _speedups.parse_frames(self.buf, False, -1, 4, False)
            assert error is None, error
            if frames:
                opcode, fin, rsv, payload = frames[0]
                assert fin
                size = len(_speedups.encode_frame(opcode, payload, fin, rsv, None))
                self.buf = self.buf[size:]
                if rsv:
                    payload = self.deflate.decode_fragment(payload, True, rsv, True, 1 << 30)
                return opcode, bytes(payload)
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk

    async def read_all(self) -> list[tuple[int, bytes]]:
        """Every frame up to and including the close frame (or EOF)."""
        out: list[tuple[int, bytes]] = []
        while True:
            item = await self.read()
            if item is None:
                return out
            out.append(item)
            if item[0] == 0x8:
                return out


def close_code(item: tuple[int, bytes]) -> int:
    assert item[0] == 0x8, item
    return int(struct.unpack("!H", item[1][:2])[0])


def server_options(deflate: bool, **limits: Any) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if deflate:
        options["extensions"] = [ServerPerMessageDeflateFactory()]
    options.update(limits)
    return options


class SlowEcho(vt.MessageHandler):
    def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
        ws.send_nowait(message)


async def slow_echo(ws: vt.WebSocketConnection) -> None:
    # An application that takes its time over each message.
    async for message in ws:
        await trio.sleep(0.05)
        await ws.send(message)


# ------------------------------------------------------------------ point 3: strict and early


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize(
    "violation, code",
    [(frame(3, b""), 1002), (frame(1, b"ok \xff"), 1007), (frame(0, b"lost"), 1002)],
    ids=["reserved-opcode", "bad-utf8", "orphan-continuation"],
)
async def test_messages_before_a_violation_are_answered_before_the_close(
    handler_style: str, deflate: bool, violation: bytes, code: int
) -> None:
    handler = slow_echo if handler_style == "async" else SlowEcho()
    big = "compressible " * 200  # above the deflate threshold: replies are compressed
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, **server_options(deflate))
            peer = await Peer.open(server.port, deflate)
            await peer.send(peer.message("one") + peer.message(b"two") + peer.message(big, deflate) + violation)
            got = await peer.read_all()
            assert got[:3] == [(1, b"one"), (2, b"two"), (1, big.encode())]
            assert len(got) == 4 and close_code(got[3]) == code
            assert await peer.read() is None  # then the server drops TCP
            await peer.aclose()
            server.shutdown()


async def test_held_failure_is_bounded_by_close_timeout() -> None:
    started = trio.Event()

    async def stuck(ws: vt.WebSocketConnection) -> None:
        await ws.receive()
        started.set()
        await trio.sleep_forever()  # never asks for the next message

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, stuck, close_timeout=0.5)
            peer = await Peer.open(server.port)
            await peer.send(peer.message("one") + peer.message("two") + frame(3, b""))
            await started.wait()
            t0 = trio.current_time()
            for _ in range(3):  # later reads are discarded; they do not restart the clock
                await trio.sleep(0.05)
                await peer.send(peer.message("more") + frame(3, b""))
            got = await peer.read_all()
            assert [close_code(item) for item in got] == [1002]
            assert 0.3 < trio.current_time() - t0 < 5
            await peer.aclose()
            server.shutdown()


async def test_handler_returning_early_sends_the_violation_code() -> None:
    async def one_and_done(ws: vt.WebSocketConnection) -> None:
        await ws.send(await ws.receive())

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, one_and_done)
            peer = await Peer.open(server.port)
            await peer.send(peer.message("a") + peer.message("b") + frame(1, b"\xc0"))
            got = await peer.read_all()
            assert got[0] == (1, b"a") and close_code(got[-1]) == 1007 and len(got) == 2
            await peer.aclose()
            server.shutdown()


async def test_fragment_header_past_the_limit_closes_1009_before_its_payload(handler_style: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style), max_message_size=1000)
            peer = await Peer.open(server.port)
            await peer.send(frame(2, b"a" * 600, fin=False) + frame(0, b"", length=401))
            got = await peer.read_all()  # no payload byte of the second fragment was sent
            assert [close_code(item) for item in got] == [1009]
            await peer.aclose()
            server.shutdown()


async def test_invalid_utf8_closes_1007_before_the_frame_is_complete(handler_style: str) -> None:
    payload = b"fine " * 20 + b"\xed\xa0\x80" + b"z" * 200_000
    data = frame(1, payload)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            peer = await Peer.open(server.port)
            # The frame's header and its first 102 bytes (up to the impossible byte).
            await peer.send(data[:14 + 102])
            got = await peer.read_all()
            assert [close_code(item) for item in got] == [1007]
            await peer.aclose()
            server.shutdown()


# ------------------------------------------------------------------ point 4: callbacks as correct


@pytest.mark.parametrize("size", [1 << 20, 2 << 20])
async def test_own_reply_above_the_fanout_limit_is_not_a_slow_consumer(handler_style: str, size: int) -> None:
    options: dict[str, Any] = {} if size == 1 << 20 else {"max_message_size": 4 << 20}
    payload = os.urandom(size)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style), **options)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/", max_message_size=4 << 20) as ws:
                for _ in range(3):
                    await ws.send(payload)
                for _ in range(3):
                    assert await ws.receive() == payload
                await ws.send("still open")
                assert await ws.receive() == "still open"
            server.shutdown()


@pytest.mark.parametrize("deflate", [False, True])
async def test_pong_before_the_echo_of_a_message_completed_after_the_ping(handler_style: str, deflate: bool) -> None:
    # Autobahn 5.6-like, all frames in one write: [text fin=0] [ping] [continuation fin=1].
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style), **server_options(deflate))
            peer = await Peer.open(server.port, deflate)
            await peer.send(
                frame(1, b"frag", fin=False) + frame(9, b"ping-1") + frame(0, b"ment", fin=False)
                + frame(9, b"ping-2") + frame(0, b"ed")
            )
            assert await peer.read() == (10, b"ping-1")
            assert await peer.read() == (10, b"ping-2")
            assert await peer.read() == (1, b"fragmented")
            # A message complete before a ping: its echo may precede the pong or not;
            # every pong still answers in order.
            await peer.send(peer.message("x") + frame(9, b"p3") + peer.message("y"))
            got = [await peer.read() for _ in range(3)]
            assert [item for item in got if item is not None and item[0] == 10] == [(10, b"p3")]
            assert [item for item in got if item is not None and item[0] == 1] == [(1, b"x"), (1, b"y")]
            await peer.aclose()
            server.shutdown()


# ------------------------------------------------------------------ Autobahn-like cases


@pytest.mark.parametrize(
    "frames, expected",
    [
        # 2.x: a ping with a 125-byte payload is answered with the same payload.
        ([frame(9, b"\xfe" * 125)], [(10, b"\xfe" * 125)]),
        # 5.3/5.4: fragments of one message, in one write.
        ([frame(1, b"a", fin=False), frame(0, b"b", fin=False), frame(0, b"c")], [(1, b"abc")]),
        # 5.x: an empty continuation and empty final fragment.
        ([frame(2, b"", fin=False), frame(0, b"", fin=False), frame(0, b"x")], [(2, b"x")]),
        # 5.15-like: a second message started inside a fragmented one: 1002.
        ([frame(1, b"a", fin=False), frame(1, b"b")], [("close", 1002)]),
        # 6.4.1-like: valid fragment, invalid fragment: 1007 (the third is never needed).
        ([frame(1, "\u03ba\u1f79".encode(), fin=False), frame(0, b"\xf4\x90\x80\x80", fin=False)], [("close", 1007)]),
        # 6.x: a character split over three fragments is fine.
        ([frame(1, b"\xf0\x9f", fin=False), frame(0, b"\x98", fin=False), frame(0, b"\x80")], [(1, "\U0001f600".encode())]),
        # 7.x: close with a valid code is echoed.
        ([frame(8, struct.pack("!H", 1000) + b"bye")], [("close", 1000)]),
        # 7.x: close with an invalid code / 1-byte payload: 1002.
        ([frame(8, struct.pack("!H", 1005))], [("close", 1002)]),
        ([frame(8, b"\x03")], [("close", 1002)]),
        # 7.5.1-like: close reason with invalid UTF-8: 1007.
        ([frame(8, struct.pack("!H", 1000) + b"\xff")], [("close", 1007)]),
    ],
    ids=["ping-125", "fragments", "empty-fragments", "nested-message", "utf8-fail-fast", "utf8-split",
         "close-echo", "close-1005", "close-1-byte", "close-bad-utf8"],
)
async def test_autobahn_like_cases(handler_style: str, frames: list[bytes], expected: list[Any]) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            peer = await Peer.open(server.port)
            await peer.send(b"".join(frames))
            got: list[Any] = []
            for want in expected:
                item = await peer.read()
                assert item is not None
                got.append(("close", close_code(item)) if item[0] == 8 else item)
            assert got == expected
            await peer.aclose()
            server.shutdown()


@pytest.mark.parametrize("size", [65536, 256 * 1024, 1 << 20])
@pytest.mark.parametrize("chunk", [1 << 20, 4093])
async def test_autobahn_like_large_echo_in_pieces(handler_style: str, size: int, chunk: int) -> None:
    # 9.x-like: text messages up to max_message_size, written in pieces of ``chunk``.
    text = ("\u00e9t\u00e9-" * (size // 6 + 1)).encode()[:size]
    text = text.decode("utf-8", "ignore").encode()
    data = frame(1, text)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            peer = await Peer.open(server.port)
            for i in range(0, len(data), chunk):
                await peer.send(data[i : i + chunk])
            assert await peer.read() == (1, text)
            await peer.aclose()
            server.shutdown()
