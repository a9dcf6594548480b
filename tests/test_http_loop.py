"""The one HTTP/1.1 connection loop (volleyio.trio._http_loop) on every door.

Doors: a WebSocket route, a ``process_request`` page, Engine.IO polling and its
WebSocket upgrade, Socket.IO polling and its WebSocket upgrade, all on one server.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import volleyio.trio as vt
from volleyio.engineio.server import CorsConfig, ServerConfig
from volleyio.trio._http_loop import MAX_HEAD, HttpConnection, parse_head_fast
from _trio_support import TEST_TIMEOUT, echo_handler, read_http_response

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"

#: door name -> (method, target, is an upgrade)
DOORS: dict[str, tuple[str, str, bool]] = {
    "ws-route": ("GET", "/ws", True),
    "page": ("GET", "/page", False),
    "engineio-polling": ("GET", "/engine.io/?EIO=4&transport=polling", False),
    "engineio-websocket": ("GET", "/engine.io/?EIO=4&transport=websocket", True),
    "socketio-polling": ("GET", "/socket.io/?EIO=4&transport=polling", False),
    "socketio-websocket": ("GET", "/socket.io/?EIO=4&transport=websocket", True),
}


def door_request(door: str, *, version: str = "1.1", extra: str = "", method: str | None = None, body: bytes = b"") -> bytes:
    default_method, target, upgrade = DOORS[door]
    head = f"{method or default_method} {target} HTTP/{version}\r\nHost: 127.0.0.1\r\n"
    if upgrade:
        head += UPGRADE
    return (head + extra + "\r\n").encode() + body


async def page(request: vt.Request) -> vt.Response | None:
    if request.path == "/page":
        return vt.Response.text(200, "a page\n")
    return None


async def eio_echo(session: Any) -> None:
    async for message in session:
        await session.send(message)


@asynccontextmanager
async def all_doors(**options: Any) -> AsyncIterator[tuple[vt.WebSocketServer, vt.EngineIOApp, vt.SocketIOServer]]:
    eio = vt.EngineIOApp(eio_echo, config=options.pop("engineio_config", None))
    sio = vt.SocketIOServer(**options.pop("socketio_options", {}))
    async with trio.open_nursery() as nursery:
        server: vt.WebSocketServer = await nursery.start(
            lambda task_status: vt.serve(
                {"/ws": echo_handler},
                "127.0.0.1",
                0,
                process_request=page,
                mounts={"/engine.io/": eio, "/socket.io/": sio.app},
                task_status=task_status,
                **options,
            )
        )
        yield server, eio, sio
        server.shutdown()


async def exchange(port: int, data: bytes, *, pieces: int = 1) -> bytes:
    """Send ``data`` (in one write unless ``pieces``) and half-close; read until the
    server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        step = max(1, -(-len(data) // pieces))
        try:
            for start in range(0, len(data), step):
                await stream.send_all(data[start : start + step])
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass
        return await read_http_response(stream, limit=1 << 20)


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every HTTP response in ``data`` (Content-Length framed): (status, headers, body)."""
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        assert end >= 0, data
        lines = data[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        if status == 101:
            out.append((status, headers, b""))
            break
        length = int(headers.get("content-length", "0"))
        out.append((status, headers, data[end + 4 : end + 4 + length]))
        data = data[end + 4 + length :]
    return out


def assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    # No error, and no traceback at WARNING or above (DEBUG notes of a reader that saw
    # its socket closed are not errors).
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or (r.exc_info and r.levelno >= logging.WARNING)]
    assert not bad, [r.getMessage() for r in bad]


# ----------------------------------------------------------------------------- HTTP/1.0


@pytest.mark.parametrize("door", list(DOORS))
async def test_http10_gets_a_response_and_close_on_every_door(door: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(TEST_TIMEOUT):
        async with all_doors() as (server, eio, _):
            data = await exchange(server.port, door_request(door, version="1.0"))
            responses = parse_responses(data)
            assert len(responses) == 1, data
            status, headers, body = responses[0]
            assert status == (400 if DOORS[door][2] else 505), data
            assert headers["connection"] == "close"
            assert headers["x-content-type-options"] == "nosniff"
            assert b"HTTP/1.1" in body
            assert not eio.sessions
    assert_no_tracebacks(caplog)


# ------------------------------------------------------------ Content-Length + Transfer-Encoding


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_content_length_and_transfer_encoding_is_refused_and_nothing_behind_it_runs(
    door: str, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    smuggled = door_request(
        door, method=method, extra="Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"
    )
    # What a smuggler hides behind it: an Engine.IO handshake, a page, an upgrade.
    behind = (
        door_request("engineio-polling") + door_request("page") + door_request("socketio-polling") + door_request("ws-route")
    )
    with trio.fail_after(TEST_TIMEOUT):
        async with all_doors() as (server, eio, sio):
            data = await exchange(server.port, smuggled + behind)
            responses = parse_responses(data)
            assert [r[0] for r in responses] == [400], data
            assert responses[0][1]["connection"] == "close"
            assert responses[0][1]["x-content-type-options"] == "nosniff"
            assert not eio.sessions and not sio.engineio.sessions
            assert not server.connections
    assert_no_tracebacks(caplog)


async def test_keep_alive_still_serves_pipelined_requests() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with all_doors() as (server, eio, _):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(door_request("engineio-polling") * 3)
                data = b""
                while data.count(b"HTTP/1.1 200") < 3:
                    chunk = await stream.receive_some(65536)
                    assert chunk
                    data += chunk
            assert [r[0] for r in parse_responses(data)] == [200, 200, 200]
            assert all("connection" not in r[1] for r in parse_responses(data))


# ----------------------------------------------------------------------------- bad requests

#: (name, bytes to send, sent in pieces) -- each path placeholder {T} is the door's target.
BATTERY: list[tuple[str, str | bytes]] = [
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n"),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("bad-method", "G@T {T} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("unknown-method", "BREW {T} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("lower-case-method", "get {T} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("no-host", "GET {T} HTTP/1.1\r\n\r\n"),
    ("two-hosts", "GET {T} HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
    ("space-before-colon", "GET {T} HTTP/1.1\r\nHost : x\r\n\r\n"),
    ("nul-in-header", "GET {T} HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
    ("bare-cr", "GET {T} HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n"),
    ("obs-fold", "GET {T} HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
    ("http-0.9", "GET {T}\r\n\r\n"),
    ("http-2.0", "GET {T} HTTP/2.0\r\nHost: x\r\n\r\n"),
    ("http-1.0", "GET {T} HTTP/1.0\r\nHost: x\r\n\r\n"),
    ("http-1.0-upgrade", "GET {T} HTTP/1.0\r\nHost: x\r\n" + UPGRADE + "\r\n"),
    ("absolute-form", "GET http://127.0.0.1{T} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("absolute-form-upgrade", "GET http://127.0.0.1{T} HTTP/1.1\r\nHost: x\r\n" + UPGRADE + "\r\n"),
    ("connect", "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n"),
    ("asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("request-line-too-long", "GET {T}&" + "a" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("header-block-too-large", "GET {T} HTTP/1.1\r\nHost: x\r\nX-Big: " + "b" * 17000 + "\r\n\r\n"),
    ("too-many-headers", "GET {T} HTTP/1.1\r\nHost: x\r\n" + "X-A: 1\r\n" * 130 + "\r\n"),
    ("bad-content-length", "POST {T} HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello"),
    ("negative-content-length", "POST {T} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
    ("two-content-lengths", "POST {T} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
    ("cl-and-te", "POST {T} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("unknown-te", "POST {T} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("bad-chunk-size", "POST {T} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("bad-chunk-end", "POST {T} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
    ("truncated-chunked", "POST {T} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe"),
    ("truncated-body", "POST {T} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n4:hi"),
    ("truncated-head", "GET {T} HTTP/1.1\r\nHost: x\r\nX-A: "),
    ("huge-content-length", "POST {T} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
    ("expect-continue-huge", "POST {T} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n"),
    ("bad-upgrade", "GET {T} HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"),
    ("upgrade-no-connection", "GET {T} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"),
    ("upgrade-post", "POST {T} HTTP/1.1\r\nHost: x\r\n" + UPGRADE + "Content-Length: 0\r\n\r\n"),
    ("bad-key", "GET {T} HTTP/1.1\r\nHost: x\r\n" + UPGRADE.replace(KEY, "not base64!") + "\r\n"),
    ("short-key", "GET {T} HTTP/1.1\r\nHost: x\r\n" + UPGRADE.replace(KEY, "c2hvcnQ=") + "\r\n"),
    ("two-keys", "GET {T} HTTP/1.1\r\nHost: x\r\n" + UPGRADE + f"Sec-WebSocket-Key: {KEY}\r\n\r\n"),
    ("version-8", "GET {T} HTTP/1.1\r\nHost: x\r\n" + UPGRADE.replace("Version: 13", "Version: 8") + "\r\n"),
    ("version-junk", "GET {T} HTTP/1.1\r\nHost: x\r\n" + UPGRADE.replace("Version: 13", "Version: 13, 8") + "\r\n"),
    ("bad-extensions", "GET {T} HTTP/1.1\r\nHost: x\r\n" + UPGRADE + "Sec-WebSocket-Extensions: ;;;\r\n\r\n"),
    ("bad-protocol", "GET {T} HTTP/1.1\r\nHost: x\r\n" + UPGRADE + "Sec-WebSocket-Protocol: a b\r\n\r\n"),
    ("two-origins", "GET {T} HTTP/1.1\r\nHost: x\r\n" + UPGRADE + "Origin: http://x\r\nOrigin: http://y\r\n\r\n"),
    ("null-origin", "GET {T} HTTP/1.1\r\nHost: x\r\nOrigin: null\r\n" + UPGRADE + "\r\n"),
    ("bad-query", "GET {T}&sid=%ZZ%00&EIO=%FF HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("non-ascii-target", b"GET /engine.io/?EIO=4&transport=polling&\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("leading-crlf-garbage", "\r\n\r\n\r\n"),
]


def battery_bytes(template: str | bytes, door: str) -> bytes:
    if isinstance(template, bytes):
        return template
    return template.replace("{T}", DOORS[door][1]).encode("latin-1")


@pytest.mark.parametrize("door", list(DOORS))
async def test_bad_requests_never_log_a_traceback(door: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: dict[str, bytes] = {}
    with trio.fail_after(TEST_TIMEOUT * 2):
        async with all_doors(open_timeout=2.0) as (server, _, _):

            async def one(name: str, data: bytes) -> None:
                seen[name] = await exchange(server.port, data)

            async with trio.open_nursery() as nursery:
                for name, template in BATTERY:
                    nursery.start_soon(one, name, battery_bytes(template, door))
            while server.active_tasks:
                await trio.sleep(0.01)
    assert_no_tracebacks(caplog)
    for name, data in seen.items():
        if not data:
            assert name in ("truncated-body", "truncated-chunked", "truncated-head", "leading-crlf-garbage"), name
            continue
        responses = parse_responses(data)
        status, headers, _ = responses[-1]
        if status >= 400:
            assert headers.get("x-content-type-options") == "nosniff", (name, data)
        if name in ("http-1.0", "http-1.0-upgrade", "cl-and-te", "absolute-form", "absolute-form-upgrade", "connect",
                    "asterisk", "request-line-too-long", "header-block-too-large", "too-many-headers", "no-host",
                    "two-hosts", "garbage", "http2-preface", "bad-content-length", "two-content-lengths", "bad-method",
                    "http-2.0", "unknown-te", "nul-in-header", "http-0.9"):
            assert status >= 400, (name, data)
            assert headers.get("connection") == "close", (name, data)
    assert status_of(seen["request-line-too-long"]) == 414
    assert status_of(seen["header-block-too-large"]) == 431
    assert status_of(seen["too-many-headers"]) == 431
    assert status_of(seen["http-1.0"]) == 505
    assert status_of(seen["http-1.0-upgrade"]) == 400


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


# ----------------------------------------------------------------------------- nosniff


async def test_engineio_json_errors_carry_nosniff() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with all_doors() as (server, _, _):
            for target in (
                "/engine.io/?EIO=4&transport=polling&sid=nosuchsession",
                "/engine.io/?EIO=3&transport=polling",
                "/engine.io/?EIO=4&transport=carrier-pigeon",
                "/socket.io/?EIO=4&transport=polling&sid=nosuchsession",
            ):
                data = await exchange(server.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                ((status, headers, body),) = parse_responses(data)
                assert status == 400 and headers["content-type"] == "application/json", data
                assert headers["x-content-type-options"] == "nosniff"
            data = await exchange(
                server.port,
                b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Origin: https://evil.example\r\nConnection: close\r\n\r\n",
            )
            ((status, headers, _),) = parse_responses(data)
            assert status == 403 and headers["x-content-type-options"] == "nosniff"


# ----------------------------------------------------------------------------- origins


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://app.example.com:443", True),
        ("HTTPS://APP.example.com", True),
        ("https://app.example.com.evil.net", False),
        ("https://app.example.com@evil.net", False),
        ("https://app.example.com:8443", False),
        ("https://app.example.com.", False),
        ("null", False),
    ],
)
async def test_origin_allow_lists_agree_on_every_door(origin: str, allowed: bool) -> None:
    allow = ["https://app.example.com"]
    config = ServerConfig(allowed_origins=tuple(allow), cors=CorsConfig(allowed_origins=tuple(allow)))
    with trio.fail_after(TEST_TIMEOUT):
        async with all_doors(
            origins=allow, engineio_config=config, socketio_options={"cors_origins": allow, "allowed_origins": allow}
        ) as (server, _, _):
            for door in DOORS:
                if door == "page":
                    continue
                data = await exchange(server.port, door_request(door, extra=f"Origin: {origin}\r\nConnection: close\r\n"))
                status, headers, _ = parse_responses(data)[0]
                if DOORS[door][2]:
                    assert (status == 101) is allowed, (door, data)
                    if not allowed:
                        assert status in (400, 403), (door, data)
                else:
                    assert (status == 200) is allowed, (door, data)
                    if allowed:
                        assert headers["access-control-allow-origin"] == origin
                    else:
                        assert status == 403 and "access-control-allow-origin" not in headers


# ----------------------------------------------------------------------------- timeouts


async def test_stalled_head_gets_408_on_a_kept_alive_engineio_connection() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with all_doors(open_timeout=0.3) as (server, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(door_request("engineio-polling") + b"GET /engine.io/?EIO=4")
                data = await read_http_response(stream)
            assert [r[0] for r in parse_responses(data)] == [200, 408]


# ----------------------------------------------------------------------------- linear time


class OneByteStream(trio.abc.Stream):
    """Hands the loop its input one byte per read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.sent = bytearray()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        chunk = self.data[self.pos : self.pos + 1]
        self.pos += 1
        return chunk

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


WORST_HEADS = {
    # At the limits, every one accepted: the longest request line, the largest block of
    # the most fields, one huge field, a block made of separators and whitespace.
    "request-line-8k": b"GET /" + b"a" * (8 * 1024 - 16) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "128-headers-16k": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%03d: %s\r\n" % (i, b"v" * 115) for i in range(127)) + b"\r\n",
    "one-16k-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a " * (8 * 1024 - 20) + b"z\r\n\r\n",
    "separators": b"GET / HTTP/1.1\r\nHost: x\r\nX-Sep: " + b",\t;" * 5400 + b"z\r\n\r\n",
}


@pytest.mark.parametrize("name", list(WORST_HEADS))
async def test_heads_parse_in_linear_time_one_byte_per_read(name: str) -> None:
    head = WORST_HEADS[name]
    assert len(head) > 8 * 1024
    stream = OneByteStream(head)
    http = HttpConnection(stream, open_timeout=60.0)
    # A quadratic parser needs ~ (16 Ki)^2 steps here: minutes, not the few tenths of a
    # second a linear one needs.
    with trio.fail_after(20):
        parsed = await http.next_request()
    assert parsed is not None, bytes(stream.sent)
    assert parsed.raw == head
    assert not stream.sent


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /" + b"a" * (9 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 200 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (20 * 1024) + b"\r\n\r\n", 431),
    ],
)
async def test_oversized_heads_one_byte_per_read(head: bytes, status: int) -> None:
    stream = OneByteStream(head)
    http = HttpConnection(stream, open_timeout=60.0)
    with trio.fail_after(20):
        assert await http.next_request() is None
    assert bytes(stream.sent).startswith(b"HTTP/1.1 %d " % status)
    assert stream.pos <= 17 * 1024 + 200  # refused as soon as the limit was crossed


async def test_worst_case_heads_over_tcp_in_tiny_writes() -> None:
    with trio.fail_after(TEST_TIMEOUT * 2):
        async with all_doors() as (server, _, _):
            for head in WORST_HEADS.values():
                data = await exchange(server.port, head.replace(b"GET / ", b"GET /page "), pieces=2000)
                assert parse_responses(data)[0][0] in (200, 404), data[:200]


# ----------------------------------------------------------------------------- the fast path twin


def h11_parse(data: bytes) -> tuple[Any, ...] | None:
    """What h11 makes of ``data``: the request fields and the head length, or None."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    length = 0
    for name, value in event.headers:
        if name == b"content-length":
            length = int(value)
        if name == b"transfer-encoding":
            length = -1
    return (event.method, event.target, event.http_version, list(event.headers), len(data) - len(conn.trailing_data[0]), length)


def fast_parse(data: bytes) -> tuple[Any, ...] | None:
    result = parse_head_fast(data)
    if result is None:
        return None
    head, length = result
    return (head.method, head.target, head.http_version, head.headers, len(head.raw), length)


def assert_twins(data: bytes) -> bool:
    """The fast path declines, or says exactly what h11 says. True if it parsed."""
    fast = fast_parse(data)
    if fast is None:
        return False
    assert h11_parse(data) == fast, data
    return True


TOKEN = st.text("abcxyzABCXYZ019-_!#$%&'*+.^`|~", min_size=1, max_size=12)
VALUE = st.binary(max_size=30).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F and c not in (0x3A,)))
OWS = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t"])
NAMES = st.one_of(TOKEN.map(str.encode), st.sampled_from([b"Host", b"host", b"HOST", b"Content-Length", b"content-length",
                                                         b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade", b"Cookie"]))


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"OPTIONS", b"HEAD"] * 3 + [b"PUT", b"get", b"DELETE"]))
    target = draw(st.sampled_from([b"/", b"/engine.io/?EIO=4&transport=polling&sid=abc", b"/a%20b?c=d", b"*", b"http://x/"]))
    version = draw(st.sampled_from([b"1.1"] * 6 + [b"1.0"]))
    lines = [method + b" " + target + b" HTTP/" + version]
    if draw(st.integers(0, 9)):
        lines.append(b"Host: " + draw(st.sampled_from([b"x", b"127.0.0.1:8080", b"", b"x"])))
    for _ in range(draw(st.integers(0, 6))):
        name = draw(NAMES)
        if name.lower() == b"content-length":
            value = draw(st.sampled_from([b"0", b"5", b"007", b"12345678901234567", b"5, 5", b"-1", b" 3"]))
        else:
            value = draw(VALUE)
        lines.append(name + b":" + draw(OWS) + value + draw(OWS))
    if not draw(st.integers(0, 9)):
        lines.insert(draw(st.integers(1, len(lines))), b"Host: x")
    body = draw(st.sampled_from([b"", b"hello", b"GET / HTTP/1.1\r\nHost: y\r\n\r\n"]))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


MUTATION_BYTES = [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\x00", b"\x7f", b"\x80", b"\xff", b",", b"a", b"A", b"\r\n\r\n", b"\r\n "]


@st.composite
def mutated_heads(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(heads()))
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(MUTATION_BYTES))
        if op == "insert":
            data[pos:pos] = piece
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 3))]
        else:
            data[pos : pos + 1] = piece
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads())
def test_fast_path_is_h11s_twin_on_generated_heads(data: bytes) -> None:
    assert_twins(data)


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_heads())
def test_fast_path_is_h11s_twin_on_mutated_heads(data: bytes) -> None:
    assert_twins(data)


def test_fast_path_takes_the_common_heads() -> None:
    # Not a twin that always declines: the heads Engine.IO clients send are its own.
    common = [
        b"GET /engine.io/?EIO=4&transport=polling&t=N8hyd6w HTTP/1.1\r\nHost: localhost:3000\r\nConnection: keep-alive\r\n"
        b"Accept: */*\r\nUser-Agent: node\r\n\r\n",
        b"POST /socket.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;charset=UTF-8\r\n"
        b"Content-Length: 5\r\n\r\n40abc",
        b"OPTIONS /x HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nhost:x\r\nX-Empty:\r\nX-Ws: \t a  b \t\r\n\r\n",
    ]
    for data in common:
        assert assert_twins(data), data
    declined = [
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
    ]
    for data in declined:
        assert parse_head_fast(data) is None, data



# ----------------------------------------------------------------------------- a plain mount


class StaticFile:
    """The smallest door: no background task, one file, keep-alive by the loop."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.seen: list[str] = []

    async def handle_request(self, request: vt.Request, http: vt.HttpConnection) -> None:
        self.seen.append(f"{request.method} {request.path}")
        if request.method not in ("GET", "HEAD"):
            await http.respond(405, [("Allow", "GET, HEAD")])
            return
        await http.respond(
            200, [("Content-Type", "application/javascript")], self.body, head_only=request.method == "HEAD"
        )


async def test_a_static_file_mount_plugs_into_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    static = StaticFile(b"console.log(1);\n")
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: vt.WebSocketServer = await nursery.start(
                lambda task_status: vt.serve(
                    {"/ws": echo_handler}, "127.0.0.1", 0, mounts={"/static/app.js": static}, task_status=task_status
                )
            )
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                # Three requests on one connection, the last one closing it; a body the
                # mount never reads is dropped by the loop between them.
                await stream.send_all(
                    b"GET /static/app.js HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"POST /static/app.js HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
                    b"HEAD /static/app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                data = await read_http_response(stream)
            # HEAD carries no body: split by hand.
            first, rest = data.split(b"\r\n\r\n", 1)
            assert first.startswith(b"HTTP/1.1 200") and rest.startswith(b"console.log(1);\n")
            rest = rest[len(b"console.log(1);\n") :]
            responses = parse_responses(rest.split(b"HTTP/1.1 200")[0])
            assert [r[0] for r in responses] == [405]
            assert responses[0][1]["x-content-type-options"] == "nosniff"
            last = rest[rest.index(b"HTTP/1.1 200") :]
            assert b"Connection: close" in last and b"Content-Length: 16" in last and last.endswith(b"\r\n\r\n")
            assert static.seen == ["GET /static/app.js", "POST /static/app.js", "HEAD /static/app.js"]
            server.shutdown()
    assert_no_tracebacks(caplog)
