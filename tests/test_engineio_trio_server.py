"""The Engine.IO trio server (volleyio.trio.EngineIOApp) at the HTTP/WebSocket level.

The client side is a tiny keep-alive HTTP/1.1 client on h11 (below) for long-polling
and ``volleyio.trio.connect`` for WebSockets; interop with the official clients lives
in the interop tests.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import h11
import pytest
import trio

import volleyio.trio as vt
from volleyio.engineio import (
    Connected,
    CorsConfig,
    Disconnected,
    Event,
    MessageReceived,
    PreparedPacket,
    ServerConfig,
    Upgraded,
)
from _trio_support import TEST_TIMEOUT, Certs

PATH = "/engine.io/"
SEP = "\x1e"


@pytest.fixture(autouse=True)
def no_logged_errors(caplog: pytest.LogCaptureFixture) -> Any:
    """A peer's misbehaviour is handled, never an error with a traceback in the log."""
    caplog.set_level(logging.WARNING, logger="volleyio")
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    errors = [r for r in records if r.name.startswith("volleyio") and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# ------------------------------------------------------------------------- HTTP client


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


class HttpClient:
    """One keep-alive HTTP/1.1 connection (requests are sent one after the other)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.closed = False

    @classmethod
    async def open(cls, port: int) -> HttpClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send_request(
        self, method: str, target: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None,
        content_length: int | None = None,
    ) -> None:
        hdrs = [("Host", "127.0.0.1")] + list(headers or [])
        if method in ("POST", "PUT") or body:
            hdrs.append(("Content-Length", str(len(body) if content_length is None else content_length)))
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
        if body:
            # Through h11 only when the declared length matches (tests may lie about it).
            if content_length is None:
                data += self.conn.send(h11.Data(data=body)) or b""
                data += self.conn.send(h11.EndOfMessage()) or b""
            else:
                data += body
        elif content_length is None:
            data += self.conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)

    async def read_reply(self) -> Reply:
        status = 0
        headers: dict[str, str] = {}
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await self.stream.receive_some(65536)
                self.conn.receive_data(chunk)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        else:
            self.closed = True
        return Reply(status, headers, bytes(body))

    async def request(self, method: str, target: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> Reply:
        await self.send_request(method, target, body, headers)
        return await self.read_reply()

    async def aclose(self) -> None:
        await self.stream.aclose()


def q(sid: str | None = None, transport: str = "polling") -> str:
    target = f"{PATH}?EIO=4&transport={transport}&t=x"
    return target + (f"&sid={sid}" if sid else "")


async def eof_or_reset(stream: trio.abc.Stream) -> bytes:
    """Read until the server closes; returns what came."""
    data = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


# ------------------------------------------------------------------------- servers


class Recorder:
    """An echo handler that records what happened to its sessions."""

    def __init__(self) -> None:
        self.sessions: list[vt.EngineIOSession] = []
        self.reasons: dict[str, str] = {}
        self.ended = trio.Event()
        self.started = trio.Event()

    async def __call__(self, session: vt.EngineIOSession) -> None:
        self.sessions.append(session)
        self.started.set()
        try:
            async for message in session:
                if message == "close-me":
                    await session.close()
                    continue
                await session.send(message)
        finally:
            assert session.disconnect_reason is not None or True
            self.reasons[session.sid] = session.disconnect_reason or "handler returned"
            self.ended.set()

    async def wait_reason(self, sid: str) -> str:
        while sid not in self.reasons:
            await self.ended.wait()
            self.ended = trio.Event()
        return self.reasons[sid]


async def start(
    nursery: trio.Nursery, handler: Callable[[vt.EngineIOSession], Awaitable[Any]] | None = None,
    config: ServerConfig | None = None, **options: Any,
) -> tuple[vt.WebSocketServer, vt.EngineIOApp]:
    server: vt.WebSocketServer = await nursery.start(
        partial(vt.serve_engineio, handler if handler is not None else Recorder(), config=config, **options)
    )
    app = server.mounts[PATH]
    assert isinstance(app, vt.EngineIOApp)
    return server, app


async def handshake(client: HttpClient, headers: list[tuple[str, str]] | None = None) -> tuple[str, dict[str, Any]]:
    reply = await client.request("GET", q(), headers=headers)
    assert reply.status == 200, reply
    assert reply.text.startswith("0{")
    data = json.loads(reply.text[1:])
    return data["sid"], data


async def poll(client: HttpClient, sid: str, count: int) -> list[str]:
    """GET until ``count`` packets arrived (pings excepted); returns them in order."""
    packets: list[str] = []
    while len(packets) < count:
        reply = await client.request("GET", q(sid))
        assert reply.status == 200, reply
        packets += [p for p in reply.text.split(SEP) if p != "2"]
    return packets


def ws_url(port: int, sid: str | None = None) -> str:
    url = f"ws://127.0.0.1:{port}{PATH}?EIO=4&transport=websocket"
    return url + (f"&sid={sid}" if sid else "")


# ------------------------------------------------------------------------- polling


async def test_handshake_has_exactly_the_five_keys() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery)
            client = await HttpClient.open(server.port)
            reply = await client.request("GET", q())
            assert reply.headers["content-type"] == "text/plain; charset=UTF-8"
            assert int(reply.headers["content-length"]) == len(reply.body)
            data = json.loads(reply.text[1:])
            assert sorted(data) == ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]
            assert data["upgrades"] == ["websocket"]
            assert (data["pingInterval"], data["pingTimeout"], data["maxPayload"]) == (25000, 20000, 1_000_000)
            assert app.session(data["sid"]) is not None
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_polling_round_trip_text_and_binary_with_keep_alive() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            payload = "4hello" + SEP + "b" + base64.b64encode(b"\x00\x01\xff").decode() + SEP + "4h\u00e9"
            reply = await client.request("POST", q(sid), payload.encode())
            assert (reply.status, reply.body, reply.headers["content-type"]) == (200, b"ok", "text/html")
            packets = await poll(client, sid, 3)
            assert SEP.join(packets) == payload
            # Every request went over the same TCP connection.
            assert not client.closed
            assert app.core.statistics()["sessions"] == 1
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_get_carries_at_most_16_packets_and_a_post_any_number() -> None:
    async def burst(session: vt.EngineIOSession) -> None:
        async for message in session:
            if message == "burst":
                for i in range(20):
                    session.send_nowait(f"n{i}")
            else:
                await session.send(message)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, burst)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            assert (await client.request("POST", q(sid), b"4burst")).body == b"ok"
            while app.core._sessions[sid].statistics()["buffered_packets"] < 20:
                await trio.sleep(0.01)
            first = (await client.request("GET", q(sid))).text.split(SEP)
            second = (await client.request("GET", q(sid))).text.split(SEP)
            assert (len(first), len(second)) == (16, 4)
            assert first + second == [f"4n{i}" for i in range(20)]
            # 100 packets in one POST are all accepted, in order.
            body = SEP.join(f"4p{i}" for i in range(100)).encode()
            assert (await client.request("POST", q(sid), body)).body == b"ok"
            assert await poll(client, sid, 100) == [f"4p{i}" for i in range(100)]
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_parked_get_is_woken_by_a_send() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery)
            getter = await HttpClient.open(server.port)
            poster = await HttpClient.open(server.port)
            sid, _ = await handshake(getter)
            await getter.send_request("GET", q(sid))
            while not app.core.statistics()["parked_polls"]:
                await trio.sleep(0.005)
            assert (await poster.request("POST", q(sid), b"4wake up")).body == b"ok"
            reply = await getter.read_reply()
            assert reply.text == "4wake up"
            await getter.aclose()
            await poster.aclose()
            nursery.cancel_scope.cancel()


async def test_second_concurrent_get_is_refused_and_closes_the_session() -> None:
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder)
            first = await HttpClient.open(server.port)
            second = await HttpClient.open(server.port)
            sid, _ = await handshake(first)
            await first.send_request("GET", q(sid))
            while not app.core.statistics()["parked_polls"]:
                await trio.sleep(0.005)
            overlap = await second.request("GET", q(sid))
            assert overlap.status == 400
            assert (await first.read_reply()).text == "1"
            assert await recorder.wait_reason(sid) == "transport error"
            after = await second.request("GET", q(sid))
            assert (after.status, after.json()) == (400, {"code": 1, "message": "Session ID unknown"})
            await first.aclose()
            await second.aclose()
            nursery.cancel_scope.cancel()


async def test_client_leaving_a_parked_get_closes_the_session() -> None:
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            await client.send_request("GET", q(sid))
            while not app.core.statistics()["parked_polls"]:
                await trio.sleep(0.005)
            await client.aclose()
            assert await recorder.wait_reason(sid) == "transport error"
            assert app.session(sid) is None
            other = await HttpClient.open(server.port)
            assert (await other.request("GET", q(sid))).status == 400
            await other.aclose()
            # No task is left behind for the gone connection.
            while server.active_tasks:
                await trio.sleep(0.005)
            nursery.cancel_scope.cancel()


async def test_post_over_max_payload_gets_413_while_streaming_and_before_reading() -> None:
    recorder = Recorder()
    config = ServerConfig(max_payload=1000)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder, config)
            # Chunked: no declared length, the limit is found while streaming.
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            head = (
                f"POST {q(sid)} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
            await client.stream.send_all(head)
            for _ in range(3):
                await client.stream.send_all(b"190\r\n" + b"4" + b"x" * 399 + b"\r\n")
            raw = await eof_or_reset(client.stream)
            assert raw.startswith(b"HTTP/1.1 413 ")
            assert await recorder.wait_reason(sid) == "message too big"
            await client.aclose()
            # A declared Content-Length over the limit is refused without sending the body.
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            await client.send_request("POST", q(sid), b"", content_length=10_000_000)
            # A client busy uploading still gets the answer (no reset behind it).
            await client.stream.send_all(b"4" + b"z" * 200_000)
            reply = await client.read_reply()
            assert reply.status == 413 and client.closed
            assert await recorder.wait_reason(sid) == "message too big"
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_truncated_post_body_ends_the_session() -> None:
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            await client.send_request("POST", q(sid), b"4only part", content_length=500)
            await client.stream.send_eof()
            assert await eof_or_reset(client.stream) == b""
            assert await recorder.wait_reason(sid) == "transport error"
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_bad_packet_in_post_closes_with_parse_error() -> None:
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            reply = await client.request("POST", q(sid), b"4fine" + SEP.encode() + b"abc")
            assert reply.status == 400
            assert await recorder.wait_reason(sid) == "parse error"
            assert (await client.request("GET", q(sid))).status == 400
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_errors_head_and_keep_alive_come_from_the_core() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery)
            client = await HttpClient.open(server.port)
            reply = await client.request("GET", f"{PATH}?EIO=4&transport=carrier-pigeon")
            assert (reply.status, reply.json()) == (400, {"code": 0, "message": "Transport unknown"})
            reply = await client.request("GET", f"{PATH}?EIO=3&transport=polling")
            assert reply.json()["code"] == 5
            reply = await client.request("POST", f"{PATH}?EIO=4&transport=polling", b"4x")
            assert reply.json() == {"code": 2, "message": "Bad handshake method"}
            head = await client.request("HEAD", q())
            assert head.status == 400 and head.body == b"" and int(head.headers["content-length"]) > 0
            # All of the above on one connection; it still serves a session.
            sid, _ = await handshake(client)
            assert not client.closed
            assert (await client.request("POST", q(sid), b"4x")).body == b"ok"
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_cors_off_allow_list_and_preflight() -> None:
    origin = "http://app.example"
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, _ = await start(nursery)
            client = await HttpClient.open(server.port)
            # Off by default: no CORS headers; a cross-origin handshake is forbidden.
            reply = await client.request("GET", q(), headers=[("Origin", origin)])
            assert reply.status == 403 and "access-control-allow-origin" not in reply.headers
            reply = await client.request("GET", q())
            assert reply.status == 200 and "access-control-allow-origin" not in reply.headers
            await client.aclose()
            nursery.cancel_scope.cancel()
        config = ServerConfig(cors=CorsConfig(allowed_origins=(origin,), credentials=True, max_age=600))
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, config=config)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client, headers=[("Origin", origin)])
            reply = await client.request("POST", q(sid), b"4x", headers=[("Origin", origin)])
            assert reply.headers["access-control-allow-origin"] == origin
            assert reply.headers["access-control-allow-credentials"] == "true"
            preflight = await client.request(
                "OPTIONS", q(sid), headers=[("Origin", origin), ("Access-Control-Request-Headers", "content-type")]
            )
            assert preflight.status == 204
            assert preflight.headers["access-control-allow-methods"] == "GET,POST,OPTIONS"
            assert preflight.headers["access-control-allow-headers"] == "content-type"
            assert preflight.headers["access-control-max-age"] == "600"
            # A parked GET answered later carries them too.
            assert await poll(client, sid, 1) == ["4x"]
            poster = await HttpClient.open(server.port)
            await client.send_request("GET", q(sid), headers=[("Origin", origin)])
            while not app.core.statistics()["parked_polls"]:
                await trio.sleep(0.005)
            await poster.request("POST", q(sid), b"4later", headers=[("Origin", origin)])
            parked = await client.read_reply()
            assert parked.text.endswith("4later") and parked.headers["access-control-allow-origin"] == origin
            await poster.aclose()
            other = await client.request("GET", q(), headers=[("Origin", "http://evil.example")])
            assert other.status == 403 and "access-control-allow-origin" not in other.headers
            await client.aclose()
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------- websocket


async def test_websocket_only_session() -> None:
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder)
            async with vt.connect(ws_url(server.port)) as ws:
                opening = await ws.receive()
                assert isinstance(opening, str) and opening.startswith("0{")
                data = json.loads(opening[1:])
                assert sorted(data) == ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]
                assert data["upgrades"] == []
                await ws.send("4hello")
                assert await ws.receive() == "4hello"
                await ws.send(b"\x00\x01")
                assert await ws.receive() == b"\x00\x01"
                session = app.session(data["sid"])
                assert session is not None and session.transport == "websocket"
                stats = session.statistics()
                assert stats["messages_in"] == 2 and stats["open"]
            assert await recorder.wait_reason(data["sid"]) == "transport close"
            nursery.cancel_scope.cancel()


async def test_upgrade_keeps_every_packet_in_order() -> None:
    total = 300
    upgraded = trio.Event()

    async def stream_numbers(session: vt.EngineIOSession) -> None:
        async for message in session:
            if message == "start":
                for i in range(total):
                    await session.send(str(i))
                    await trio.sleep(0)
                    if i == total // 2:
                        await upgraded.wait()
            else:
                await session.send(message)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, stream_numbers)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            assert (await client.request("POST", q(sid), b"4start")).body == b"ok"
            received: list[str] = []
            async with vt.connect(ws_url(server.port, sid)) as ws:
                await ws.send("2probe")
                assert await ws.receive() == "3probe"
                # Poll until the server says noop (it has nothing more for polling).
                while True:
                    reply = await client.request("GET", q(sid))
                    assert reply.status == 200
                    if reply.text == "6":
                        break
                    received += [p for p in reply.text.split(SEP) if p != "2"]
                await ws.send("5")
                while app.session(sid) is None or app.session(sid).transport != "websocket":  # type: ignore[union-attr]
                    await trio.sleep(0.005)
                upgraded.set()
                while len(received) < total:
                    message = await ws.receive()
                    assert message != "6"  # no stray noop on the new transport
                    received.append(message)  # type: ignore[arg-type]
                assert received == [f"4{i}" for i in range(total)]
                # The polling transport is gone for this session.
                assert (await client.request("GET", q(sid))).status == 400
                # A second WebSocket for the sid is accepted, then closed.
                async with vt.connect(ws_url(server.port, sid)) as extra:
                    with pytest.raises(vt.ConnectionClosed):
                        await extra.receive()
                await ws.send("4still here")
                assert await ws.receive() == "4still here"
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_websocket_frame_over_max_payload_closes_1009() -> None:
    recorder = Recorder()
    config = ServerConfig(max_payload=1000)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder, config)
            async with vt.connect(ws_url(server.port)) as ws:
                sid = json.loads((await ws.receive())[1:])["sid"]  # type: ignore[index]
                await ws.send("4" + "x" * 999)  # exactly maxPayload: fine
                assert await ws.receive() == "4" + "x" * 999
                await ws.send("4" + "x" * 1000)
                with pytest.raises(vt.ConnectionClosed) as info:
                    await ws.receive()
                assert info.value.code == 1009
            assert await recorder.wait_reason(sid) == "message too big"
            nursery.cancel_scope.cancel()


async def test_dropped_websocket_ends_with_transport_close() -> None:
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder)
            async with vt.connect(ws_url(server.port)) as ws:
                sid = json.loads((await ws.receive())[1:])["sid"]  # type: ignore[index]
                await trio.aclose_forcefully(ws.stream)
            assert await recorder.wait_reason(sid) == "transport close"
            while server.active_tasks or app.websockets:
                await trio.sleep(0.005)
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------- heartbeat, close


async def test_ping_timeout_ends_polling_and_websocket_sessions() -> None:
    recorder = Recorder()
    # A generous timeout: answering in time must not depend on the machine's load.
    config = ServerConfig(ping_interval_ms=200, ping_timeout_ms=1000)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder, config)
            client = await HttpClient.open(server.port)
            sid, data = await handshake(client)
            assert (data["pingInterval"], data["pingTimeout"]) == (200, 1000)
            # Answer two pings: the session lives on.
            for _ in range(2):
                assert (await client.request("GET", q(sid))).text == "2"
                assert (await client.request("POST", q(sid), b"3")).body == b"ok"
            assert app.session(sid) is not None
            # Then stop answering.
            assert (await client.request("GET", q(sid))).text == "2"
            assert await recorder.wait_reason(sid) == "ping timeout"
            await client.aclose()
            async with vt.connect(ws_url(server.port)) as ws:
                ws_sid = json.loads((await ws.receive())[1:])["sid"]  # type: ignore[index]
                assert await ws.receive() == "2"
                assert await recorder.wait_reason(ws_sid) == "ping timeout"
                with pytest.raises(vt.ConnectionClosed):
                    await ws.receive()
            nursery.cancel_scope.cancel()


async def test_server_close_on_both_transports() -> None:
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            assert (await client.request("POST", q(sid), b"4a\x1e4close-me")).body == b"ok"
            assert await recorder.wait_reason(sid) == "forced close"
            # Buffered packets are still delivered, then ``1``.
            packets: list[str] = []
            while not packets or packets[-1] != "1":
                packets += (await client.request("GET", q(sid))).text.split(SEP)
            assert packets == ["4a", "1"]
            assert (await client.request("GET", q(sid))).status == 400
            await client.aclose()
            async with vt.connect(ws_url(server.port)) as ws:
                ws_sid = json.loads((await ws.receive())[1:])["sid"]  # type: ignore[index]
                await ws.send("4close-me")
                with pytest.raises(vt.ConnectionClosed) as info:
                    await ws.receive()
                assert info.value.code == 1000
            assert await recorder.wait_reason(ws_sid) == "forced close"
            nursery.cancel_scope.cancel()


async def test_shutdown_answers_parked_gets_and_closes_websockets_1001() -> None:
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            await client.send_request("GET", q(sid))
            while not app.core.statistics()["parked_polls"]:
                await trio.sleep(0.005)
            async with vt.connect(ws_url(server.port)) as ws:
                ws_sid = json.loads((await ws.receive())[1:])["sid"]  # type: ignore[index]
                server.shutdown()
                reply = await client.read_reply()
                assert (reply.status, reply.text) == (200, "1")
                with pytest.raises(vt.ConnectionClosed) as info:
                    await ws.receive()
                assert info.value.code == 1001
            await client.aclose()
        # Handlers are cancelled at shutdown; their sessions end "forced close".
        assert {s.sid: s.disconnect_reason for s in recorder.sessions} == {sid: "forced close", ws_sid: "forced close"}


# ------------------------------------------------------------------------- API modes


async def test_on_event_mode_delivers_core_events_and_flushes_sends() -> None:
    events: list[Event] = []
    app: vt.EngineIOApp

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, MessageReceived):
            app.core.send(event.sid, event.data)  # flushed by the transport wakers

    app = vt.EngineIOApp(on_event=on_event)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: vt.WebSocketServer = await nursery.start(
                partial(vt.serve, None, mounts={PATH: app})
            )
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            await client.send_request("GET", q(sid))
            while not app.core.statistics()["parked_polls"]:
                await trio.sleep(0.005)
            poster = await HttpClient.open(server.port)
            assert (await poster.request("POST", q(sid), b"4ping-pong")).body == b"ok"
            assert (await client.read_reply()).text == "4ping-pong"
            async with vt.connect(ws_url(server.port, sid)) as ws:
                await ws.send("2probe")
                assert await ws.receive() == "3probe"
                assert (await client.request("GET", q(sid))).text == "6"
                await ws.send("5")
                await ws.send("4over ws")
                assert await ws.receive() == "4over ws"
                session = app.session(sid)
                assert session is not None
                await session.close()
                with pytest.raises(vt.ConnectionClosed):
                    await ws.receive()
            kinds = [type(e) for e in events]
            assert kinds == [Connected, MessageReceived, Upgraded, MessageReceived, Disconnected]
            assert isinstance(events[-1], Disconnected) and events[-1].reason.value == "forced close"
            with pytest.raises(ValueError):
                vt.EngineIOApp()
            await client.aclose()
            await poster.aclose()
            nursery.cancel_scope.cancel()


async def test_prepared_packet_is_encoded_once_for_every_transport() -> None:
    app = vt.EngineIOApp(Recorder())
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: vt.WebSocketServer = await nursery.start(partial(vt.serve, None, mounts={PATH: app}))
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            async with AsyncExitStack() as stack:
                sockets = []
                for _ in range(3):
                    ws = await stack.enter_async_context(vt.connect(ws_url(server.port)))
                    await ws.receive()
                    sockets.append(ws)
                text = PreparedPacket("news")
                binary = PreparedPacket(b"\x01\x02")
                assert app.broadcast(text) == 4
                assert app.broadcast(binary) == 4
                assert await poll(client, sid, 2) == ["4news", "bAQI="]
                for ws in sockets:
                    assert await ws.receive() == "4news"
                    assert await ws.receive() == b"\x01\x02"
                assert text.frame_cache is not None and binary.frame_cache is not None
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_inbound_queue_full_stops_reading_posts() -> None:
    release = trio.Event()
    seen: list[str | bytes] = []

    async def slow(session: vt.EngineIOSession) -> None:
        await release.wait()
        async for message in session:
            seen.append(message)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, slow)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            body = SEP.join(f"4m{i}" for i in range(20)).encode()
            assert (await client.request("POST", q(sid), body)).body == b"ok"
            session = app.session(sid)
            assert session is not None and session.statistics()["inbound_queue"] == 20
            # The queue is over its bound: the next POST body is not read.
            await client.send_request("POST", q(sid), b"4late")
            with trio.move_on_after(0.2):
                await client.read_reply()
                pytest.fail("the POST was answered while the inbound queue was full")
            release.set()
            # (The h11 client state is mid-response; read the answer on the raw stream.)
            raw = bytearray()
            while not raw.endswith(b"ok"):
                raw += await client.stream.receive_some(1024)
            assert raw.startswith(b"HTTP/1.1 200")
            while len(seen) < 21:
                await trio.sleep(0.005)
            assert seen == [f"m{i}" for i in range(20)] + ["late"]
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_send_waits_above_the_high_water_mark() -> None:
    sent = 0

    async def producer(session: vt.EngineIOSession) -> None:
        nonlocal sent
        for _ in range(10):
            await session.send("x" * 600)
            sent += 1
        await trio.sleep_forever()

    app = vt.EngineIOApp(producer, send_high_water=1000, send_low_water=100)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: vt.WebSocketServer = await nursery.start(partial(vt.serve, None, mounts={PATH: app}))
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            while sent < 2:
                await trio.sleep(0.005)
            await trio.sleep(0.05)
            assert sent == 2  # 1200 bytes buffered > 1000: the third send waits
            session = app.session(sid)
            assert session is not None and session.buffered_amount == 1200
            packets = await poll(client, sid, 10)
            assert packets == ["4" + "x" * 600] * 10
            while sent < 10:
                await trio.sleep(0.005)
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_mixed_server_serves_websocket_routes_and_engineio() -> None:
    async def ws_echo(ws: vt.WebSocketConnection) -> None:
        async for message in ws:
            await ws.send(message)

    app = vt.EngineIOApp(Recorder())
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: vt.WebSocketServer = await nursery.start(
                partial(vt.serve, {"/ws": ws_echo}, mounts={PATH: app})
            )
            async with vt.connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await ws.send("plain")
                assert await ws.receive() == "plain"
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            assert (await client.request("POST", q(sid), b"4eio")).body == b"ok"
            assert await poll(client, sid, 1) == ["4eio"]
            # The same keep-alive connection asking for another path goes back to the front door.
            other = await client.request("GET", "/elsewhere")
            assert other.status == 404
            await client.aclose()
            nursery.cancel_scope.cancel()


def test_engineio_closed_carries_the_reason() -> None:
    exc = vt.EngineIOClosed("ping timeout")
    assert exc.reason == "ping timeout" and isinstance(exc, vt.ConnectionClosed)
    assert "ping timeout" in str(exc)



async def test_refused_websocket_gets_the_cores_raw_400() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, _ = await start(nursery)
            with pytest.raises(vt.ConnectError) as info:
                async with vt.connect(ws_url(server.port, "no-such-sid")):
                    pass
            assert info.value.status == 400
            # Raw: the message is the body (Node's abortUpgrade).
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(
                (
                    f"GET {ws_url(server.port, 'nope').split(str(server.port), 1)[1]} HTTP/1.1\r\n"
                    "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            raw = await eof_or_reset(stream)
            assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n") and raw.endswith(b"Session ID unknown")
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_upgrade_timeout_closes_the_probe_and_keeps_polling() -> None:
    recorder = Recorder()
    config = ServerConfig(upgrade_timeout_ms=200)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder, config)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            async with vt.connect(ws_url(server.port, sid)) as ws:
                # No probe: the core's upgrade timer closes the WebSocket.
                with pytest.raises(vt.ConnectionClosed):
                    await ws.receive()
            assert app.session(sid) is not None and app.session(sid).transport == "polling"  # type: ignore[union-attr]
            assert (await client.request("POST", q(sid), b"4still polling")).body == b"ok"
            assert await poll(client, sid, 1) == ["4still polling"]
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_reset_in_the_middle_of_a_post_ends_the_session() -> None:
    import socket
    import struct

    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            await client.send_request("POST", q(sid), b"4partial", content_length=100_000)
            await trio.sleep(0.05)
            client.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.stream.socket.close()  # RST
            assert await recorder.wait_reason(sid) == "transport error"
            while server.active_tasks:
                await trio.sleep(0.005)
            nursery.cancel_scope.cancel()


async def test_session_api_after_close_and_failing_handler(caplog: pytest.LogCaptureFixture) -> None:
    got: dict[str, Any] = {}
    done = trio.Event()

    async def handler(session: vt.EngineIOSession) -> None:
        first = await session.receive()
        if first == "boom":
            raise RuntimeError("handler bug")
        await session.close()
        got["reason"] = session.disconnect_reason
        with pytest.raises(vt.EngineIOClosed) as info:
            await session.receive()
        got["receive"] = info.value.reason
        with pytest.raises(vt.EngineIOClosed):
            await session.send("late")
        got["nowait"] = session.send_nowait("late")
        got["stats"] = session.statistics()
        done.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, handler)
            client = await HttpClient.open(server.port)
            sid, _ = await handshake(client)
            assert (await client.request("POST", q(sid), b"4bye")).body == b"ok"
            await done.wait()
            assert got["reason"] == got["receive"] == "forced close"
            assert got["nowait"] is False
            assert got["stats"]["open"] is False and got["stats"]["disconnect_reason"] == "forced close"
            assert (await client.request("GET", q(sid))).text == "1"
            # A handler that raises: logged, and its session is closed.
            sid, _ = await handshake(client)
            assert (await client.request("POST", q(sid), b"4boom")).body == b"ok"
            assert (await client.request("GET", q(sid))).text == "1"
            assert "handler bug" in caplog.text
            caplog.clear()
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_broadcast_over_permessage_deflate_connections() -> None:
    big = "y" * 5000  # above the 1 KiB compression threshold
    app = vt.EngineIOApp(Recorder())
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: vt.WebSocketServer = await nursery.start(
                partial(vt.serve, None, mounts={PATH: app}, compression="deflate")
            )
            async with AsyncExitStack() as stack:
                compressed = await stack.enter_async_context(vt.connect(ws_url(server.port), compression="deflate"))
                plain = await stack.enter_async_context(vt.connect(ws_url(server.port)))
                sids = [json.loads((await ws.receive())[1:])["sid"] for ws in (compressed, plain)]  # type: ignore[index]
                assert compressed.extensions and not plain.extensions
                packet = PreparedPacket(big)
                for _ in range(3):
                    assert app.broadcast(packet) == 2
                for ws in (compressed, plain):
                    for _ in range(3):
                        assert await ws.receive() == "4" + big
                # Ordinary sends interleave with shared frames on the same compressor context.
                session = app.session(sids[0])
                assert session is not None
                await session.send("z" * 3000)
                assert app.broadcast(packet) == 2
                await session.send("after")
                assert [await compressed.receive() for _ in range(3)] == ["4" + "z" * 3000, "4" + big, "4after"]
                assert await plain.receive() == "4" + big
            nursery.cancel_scope.cancel()


async def test_polling_and_websocket_over_tls(tmp_path: Any) -> None:
    certs = Certs(tmp_path)
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, recorder, ssl_context=certs.server_context)

            async def tls_client() -> HttpClient:
                tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
                stream = trio.SSLStream(tcp, certs.client_context, server_hostname="127.0.0.1")
                await stream.do_handshake()
                return HttpClient(stream)

            getter, poster = await tls_client(), await tls_client()
            sid, _ = await handshake(getter)
            await getter.send_request("GET", q(sid))
            while not app.core.statistics()["parked_polls"]:
                await trio.sleep(0.005)
            assert (await poster.request("POST", q(sid), b"4secure")).body == b"ok"
            assert (await getter.read_reply()).text == "4secure"
            # Leaving while parked is noticed over TLS too.
            await getter.send_request("GET", q(sid))
            while not app.core.statistics()["parked_polls"]:
                await trio.sleep(0.005)
            await trio.aclose_forcefully(getter.stream)
            assert await recorder.wait_reason(sid) == "transport error"
            await poster.aclose()
            url = ws_url(server.port).replace("ws://", "wss://")
            async with vt.connect(url, ssl_context=certs.client_context) as ws:
                await ws.receive()
                await ws.send("4over tls")
                assert await ws.receive() == "4over tls"
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------- batching, request record


async def test_one_get_carries_every_echo_of_one_post() -> None:
    """The echoes a handler sends for one POST leave in one GET (not one GET each)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery)
            getter = await HttpClient.open(server.port)
            poster = await HttpClient.open(server.port)
            sid, _ = await handshake(getter)
            await getter.send_request("GET", q(sid))
            while not app.core.statistics()["parked_polls"]:
                await trio.sleep(0.005)
            body = SEP.join(f"4m{i}" for i in range(10)).encode()
            assert (await poster.request("POST", q(sid), body)).status == 200
            reply = await getter.read_reply()
            assert reply.status == 200
            assert reply.text.split(SEP) == [f"4m{i}" for i in range(10)]
            # Still bounded by max_packets_per_poll (16): 20 echoes take two GETs.
            await getter.send_request("GET", q(sid))
            while not app.core.statistics()["parked_polls"]:
                await trio.sleep(0.005)
            body = SEP.join(f"4n{i}" for i in range(20)).encode()
            assert (await poster.request("POST", q(sid), body)).status == 200
            first = (await getter.read_reply()).text.split(SEP)
            assert first == [f"4n{i}" for i in range(16)]
            assert await poll(getter, sid, 4) == [f"4n{i}" for i in range(16, 20)]
            await getter.aclose()
            await poster.aclose()
            nursery.cancel_scope.cancel()


async def test_clients_leaving_parked_gets_end_sessions_without_errors(caplog: pytest.LogCaptureFixture) -> None:
    """Parked GETs whose clients vanish (FIN, RST, right after a wake-up or a server
    close) end their sessions quietly; the autouse fixture fails on any logged error
    (this used to log "connection task failed" from _park)."""
    recorder = Recorder()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            # A woken GET is answered before its client leaves: that session then ends
            # by ping timeout (as in Node), kept short here.
            config = ServerConfig(ping_interval_ms=300, ping_timeout_ms=300)
            server, app = await start(nursery, recorder, config=config)
            clients: list[tuple[HttpClient, str]] = []
            for _ in range(12):
                client = await HttpClient.open(server.port)
                sid, _ = await handshake(client)
                await client.send_request("GET", q(sid))
                clients.append((client, sid))
            while app.core.statistics()["parked_polls"] < len(clients):
                await trio.sleep(0.005)
            for index, (client, sid) in enumerate(clients):
                session = app.session(sid)
                assert session is not None
                if index % 3 == 1:
                    session.send_nowait("wake")  # the GET is woken as the client leaves
                elif index % 3 == 2:
                    await session.close()  # the server closes as the client leaves
                if index % 2:
                    sock = client.stream.socket  # type: ignore[attr-defined]
                    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                await client.aclose()
            for _, sid in clients:
                reason = await recorder.wait_reason(sid)
                assert reason in ("transport error", "forced close", "ping timeout"), reason
            while server.active_tasks:
                await trio.sleep(0.005)
            assert not app.sessions and app.core.statistics()["parked_polls"] == 0
            assert "connection task failed" not in caplog.text
            nursery.cancel_scope.cancel()


async def test_session_request_is_the_handshake_record() -> None:
    seen: list[vt.EngineIOSession] = []

    async def handler(session: vt.EngineIOSession) -> None:
        seen.append(session)
        async for message in session:
            await session.send(message)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery, handler)
            client = await HttpClient.open(server.port)
            headers = [("X-Token", "abc"), ("X-Multi", "1"), ("X-Multi", "2")]
            reply = await client.request("GET", q() + "&room=a%20b&room=second", headers=headers)
            sid = json.loads(reply.text[1:])["sid"]
            assert (await client.request("POST", q(sid), b"4hi")).status == 200
            assert await poll(client, sid, 1) == ["4hi"]
            async with vt.connect(ws_url(server.port) + "&k=v", extra_headers=[("Cookie", "c=1")]) as ws:
                assert str(await ws.receive()).startswith("0{")
                await ws.send("4x")
                assert await ws.receive() == "4x"
            polling, websocket = seen
            request = polling.request
            assert isinstance(request, vt.EngineIORequest)
            assert request.method == "GET" and request.path == PATH
            assert request.query_string.startswith("EIO=4&transport=polling")
            assert request.query["room"] == "a b" and request.query["EIO"] == "4"
            assert ("room", "second") in request.query_params
            assert ("x-token", "abc") in request.headers
            assert [v for k, v in request.headers if k == "x-multi"] == ["1", "2"]
            assert request.header("X-TOKEN") == "abc" and request.header("nope") is None
            assert request.remote is not None and request.remote[0] == "127.0.0.1"
            assert request.secure is False and request.http_version == "1.1"
            assert request.raw_head.endswith(b"\r\n\r\n")
            with pytest.raises(AttributeError):
                request._raw = b""  # type: ignore[misc]
            # Later requests of the session do not replace it.
            assert polling.request is request
            assert websocket.request is not None and websocket.request.query["k"] == "v"
            assert websocket.request.header("cookie") == "c=1"
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_websocket_sends_keep_order_and_backpressure_with_a_slow_reader() -> None:
    """Packets are written by the sender itself; a peer that stops reading fills the
    socket, the rest stays in the core's buffer (send() then waits) and arrives in order."""
    done = trio.Event()

    async def producer(session: vt.EngineIOSession) -> None:
        for i in range(400):
            await session.send(f"{i}:" + "y" * 4000)
        done.set()
        await trio.sleep_forever()

    app = vt.EngineIOApp(producer, send_high_water=64 * 1024, send_low_water=16 * 1024)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: vt.WebSocketServer = await nursery.start(partial(vt.serve, None, mounts={PATH: app}))
            async with vt.connect(ws_url(server.port), max_message_size=2**20) as ws:
                assert str(await ws.receive()).startswith("0{")
                sid = next(iter(app.sessions))
                session = app.session(sid)
                assert session is not None
                # Nobody reads: the kernel buffers fill, then the core's buffer.
                while session.buffered_amount < 64 * 1024 and not done.is_set():
                    await trio.sleep(0.01)
                assert not done.is_set()
                assert session.buffered_amount <= 64 * 1024 + 4010
                for i in range(400):
                    assert await ws.receive() == f"4{i}:" + "y" * 4000
                await done.wait()
            nursery.cancel_scope.cancel()


async def test_keep_alive_requests_plain_chunked_pipelined_and_invalid() -> None:
    """Later requests of a keep-alive connection: plain heads (the fast parser), chunked
    bodies and folded headers (h11), two requests in one write, Connection: close, and
    a malformed head (400, connection closed)."""

    async def read_response(stream: trio.SocketStream, buffer: bytearray) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in buffer:
            chunk = await stream.receive_some(65536)
            assert chunk, bytes(buffer)
            buffer += chunk
        end = buffer.index(b"\r\n\r\n") + 4
        head = bytes(buffer[:end])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(buffer) < end + length:
            buffer += await stream.receive_some(65536)
        body = bytes(buffer[end : end + length])
        del buffer[: end + length]
        return head, body

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, app = await start(nursery)
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            buffer = bytearray()
            await stream.send_all(f"GET {q()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head, body = await read_response(stream, buffer)
            sid = json.loads(body[1:])["sid"]
            target = q(sid).encode()
            plain = b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n4one"
            chunked = (
                b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"4\r\n4two\r\n0\r\n\r\n"
            )
            folded = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n"
            await stream.send_all(plain + chunked)  # pipelined: two requests in one write
            assert (await read_response(stream, buffer))[1] == b"ok"
            assert (await read_response(stream, buffer))[1] == b"ok"
            await stream.send_all(folded)
            head, body = await read_response(stream, buffer)
            assert head.startswith(b"HTTP/1.1 200") and body.split(SEP.encode()) == [b"4one", b"4two"]
            assert b"connection: close" not in head.lower()
            await stream.send_all(b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                                  b"Connection: close\r\n\r\n4thr")
            await trio.sleep(0.05)
            await stream.send_all(b"ee")  # the body arrives in two reads
            head, body = await read_response(stream, buffer)
            assert body == b"ok" and b"connection: close" in head.lower()
            assert await eof_or_reset(stream) == b""
            # A malformed later request gets 400 and the connection is closed.
            client = await HttpClient.open(server.port)
            assert await poll(client, sid, 1) == ["4three"]
            await client.stream.send_all(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
            rest = await eof_or_reset(client.stream)
            assert rest.startswith(b"HTTP/1.1 400")
            nursery.cancel_scope.cancel()


async def test_broadcast_written_directly_keeps_order_counts_and_slow_consumer_limit() -> None:
    """An idle WebSocket session gets a broadcast straight from the sender; one with
    packets buffered gets it behind them; one that never reads fills its socket, then the
    core's buffer, and is closed as a slow consumer -- the others are unaffected."""
    recorder = Recorder()
    app = vt.EngineIOApp(recorder, config=ServerConfig(max_buffered_bytes=256 * 1024))
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: vt.WebSocketServer = await nursery.start(partial(vt.serve, None, mounts={PATH: app}))
            # The sleeper: a raw socket that completes the handshake and never reads.
            sleeper = await trio.open_tcp_stream("127.0.0.1", server.port)
            await sleeper.send_all(
                f"GET {PATH}?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
            )
            while not app.sessions:
                await trio.sleep(0.01)
            (sleeper_sid,) = list(app.sessions)
            async with vt.connect(ws_url(server.port), max_message_size=2**20) as reader:
                assert str(await reader.receive()).startswith("0{")
                (reader_sid,) = [sid for sid in app.sessions if sid != sleeper_sid]
                reader_session = app.session(reader_sid)
                assert reader_session is not None
                # Packets already buffered in the core come first, then the broadcast.
                app.core.send(reader_sid, "queued-1")
                app.core.send(reader_sid, "queued-2")
                assert app.broadcast(PreparedPacket("first")) == 2
                assert await reader.receive() == "4queued-1"
                assert await reader.receive() == "4queued-2"
                assert await reader.receive() == "4first"
                before = int(reader_session.statistics()["messages_out"])
                blob = PreparedPacket("z" * 50_000)
                for _ in range(400):  # 20 MB for the sleeper: its socket, then its buffer, overflow
                    app.broadcast(blob)
                    assert await reader.receive() == "4" + "z" * 50_000
                assert int(reader_session.statistics()["messages_out"]) == before + 400
                assert reader_session.buffered_amount == 0
                with trio.fail_after(5):
                    assert await recorder.wait_reason(sleeper_sid) == "slow consumer"
                assert reader_sid in app.sessions
            await sleeper.aclose()
            nursery.cancel_scope.cancel()


async def test_websocket_inbox_full_then_drained_keeps_reading() -> None:
    """The transport stops taking a WebSocket's messages while the session's inbound
    queue is full, and goes on, in order, once the handler has emptied it."""
    release = trio.Event()
    seen: list[str | bytes] = []

    async def handler(session: vt.EngineIOSession) -> None:
        await release.wait()
        async for message in session:
            seen.append(message)
            await session.send(message)

    app = vt.EngineIOApp(handler, max_queue=4)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: vt.WebSocketServer = await nursery.start(partial(vt.serve, None, mounts={PATH: app}))
            async with vt.connect(ws_url(server.port)) as ws:
                assert str(await ws.receive()).startswith("0{")
                for i in range(100):
                    await ws.send(f"4m{i}")
                (session,) = app.sessions.values()
                while session.statistics()["inbound_queue"] < 4:
                    await trio.sleep(0.01)
                await trio.sleep(0.05)
                assert session.statistics()["inbound_queue"] <= 4 + 1  # held at the bound
                release.set()
                assert [await ws.receive() for _ in range(100)] == [f"4m{i}" for i in range(100)]
                await ws.send("4after")
                assert await ws.receive() == "4after"
            nursery.cancel_scope.cancel()
    assert seen[:100] == [f"m{i}" for i in range(100)]


async def test_session_receive_many_batches_with_a_bound_and_a_stop() -> None:
    batches: list[list[str | bytes]] = []
    done = trio.Event()

    async def handler(session: vt.EngineIOSession) -> None:
        await trio.sleep(0.3)  # let everything arrive first
        try:
            while True:
                batches.append(await session.receive_many(4, until=lambda m: m == "stop"))
        except vt.EngineIOClosed:
            done.set()

    app = vt.EngineIOApp(handler, max_queue=64)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: vt.WebSocketServer = await nursery.start(partial(vt.serve, None, mounts={PATH: app}))
            async with vt.connect(ws_url(server.port)) as ws:
                assert str(await ws.receive()).startswith("0{")
                for message in ["4a", "4b", "4stop", "4c", "4d", "4e", "4f", "4g", "4h"]:
                    await ws.send(message)
                await trio.sleep(0.6)
                await ws.send("1")  # close
                await done.wait()
            nursery.cancel_scope.cancel()
    assert batches == [["a", "b", "stop"], ["c", "d", "e", "f"], ["g", "h"]]
