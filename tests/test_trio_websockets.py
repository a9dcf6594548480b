"""volleyio.trio against the ``websockets`` library (its trio and asyncio implementations)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trio
from websockets.exceptions import ConnectionClosed as WSConnectionClosed
from websockets.exceptions import InvalidStatus

import volleyio.trio as vt
from _trio_support import TEST_TIMEOUT, Certs, echo_for, echo_handler, needs_websockets_trio, start_server
from _trio_support import ws_trio_connect as ws_connect
from _trio_support import ws_trio_serve as ws_serve

pytestmark = pytest.mark.interop


@needs_websockets_trio
async def test_text_binary_large_echo_websockets_client(handler_style: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            async with ws_connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
                await ws.send("héllo ✓")
                assert await ws.recv() == "héllo ✓"
                await ws.send(b"\x00\xff" * 10)
                assert await ws.recv() == b"\x00\xff" * 10
                big = bytes(range(256)) * 4000  # 1,024,000 bytes, under the 1 MiB limit
                await ws.send(big)
                assert await ws.recv() == big
                text = "é" * 300_000
                await ws.send(text)
                assert await ws.recv() == text
                await ws.send("")
                assert await ws.recv() == ""
            server.shutdown()


@needs_websockets_trio
async def test_fragmented_messages_from_websockets_client(handler_style: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            async with ws_connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
                # A multi-byte character split across fragments.
                await ws.send(["ab", "c€", "d", "😀"])
                assert await ws.recv() == "abc€d😀"
                await ws.send([b"\x01", b"\x02\x03", b""])
                assert await ws.recv() == b"\x01\x02\x03"
            server.shutdown()


@needs_websockets_trio
async def test_streaming_receive_yields_each_fragment() -> None:
    pieces: list[object] = []

    async def handler(ws: vt.WebSocketConnection) -> None:
        async for chunk in ws.receive_stream():
            pieces.append(chunk)
        await ws.send("done")

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with ws_connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
                await ws.send([b"a" * 1000, b"b" * 1000, b"c"])
                assert await ws.recv() == "done"
            server.shutdown()
    # websockets ends an iterable message with an empty final frame: one chunk per frame.
    assert pieces == [b"a" * 1000, b"b" * 1000, b"c", b""]


@needs_websockets_trio
async def test_ping_pong_both_directions() -> None:
    server_pinged = trio.Event()

    async def handler(ws: vt.WebSocketConnection) -> None:
        await ws.ping()  # returns when the websockets client's pong arrives
        server_pinged.set()
        await echo_handler(ws)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with ws_connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
                await ws.send("x")  # keeps the client reading so it answers the ping
                assert await ws.recv() == "x"
                await server_pinged.wait()
                pong_event = await ws.ping(b"client-ping")  # websockets.trio: a trio.Event
                await ws.send("y")  # the server answers the ping while it reads this
                assert await ws.recv() == "y"
                await pong_event.wait()
                assert pong_event.is_set()
            server.shutdown()


@needs_websockets_trio
@pytest.mark.parametrize("code", [1000, 1001, 1003, 1008, 1011, 3000, 4999])
async def test_server_close_codes_seen_by_websockets(code: int) -> None:
    async def handler(ws: vt.WebSocketConnection) -> None:
        await ws.close(code, "bye")

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with ws_connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
                with pytest.raises(WSConnectionClosed) as info:
                    await ws.recv()
                assert info.value.rcvd is not None
                assert info.value.rcvd.code == code
                assert info.value.rcvd.reason == "bye"
            server.shutdown()


@needs_websockets_trio
async def test_client_close_code_seen_by_volleyio_server() -> None:
    seen: list[tuple[int, str]] = []

    async def handler(ws: vt.WebSocketConnection) -> None:
        with pytest.raises(vt.ConnectionClosed) as info:
            await ws.receive()
        seen.append((info.value.code, info.value.reason))

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with ws_connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
                await ws.aclose(4001, "custom")
            while not seen:
                await trio.sleep(0.01)
            server.shutdown()
    assert seen == [(4001, "custom")]


@needs_websockets_trio
async def test_subprotocol_and_headers_with_websockets_client() -> None:
    seen: dict[str, object] = {}

    async def handler(ws: vt.WebSocketConnection) -> None:
        seen["subprotocol"] = ws.subprotocol
        seen["token"] = ws.request.header("x-token")
        await ws.send(ws.subprotocol or "")

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, subprotocols=["chat.v2", "chat.v1"])
            async with ws_connect(
                f"ws://127.0.0.1:{server.port}/",
                subprotocols=["chat.v1", "chat.v2"],  # type: ignore[list-item]
                additional_headers={"X-Token": "t0k"},
                compression=None,
            ) as ws:
                assert ws.subprotocol == "chat.v2"
                assert await ws.recv() == "chat.v2"
            server.shutdown()
    assert seen == {"subprotocol": "chat.v2", "token": "t0k"}


@needs_websockets_trio
async def test_process_request_rejects_with_status(handler_style: str) -> None:
    async def auth(request: vt.Request) -> vt.Response | None:
        if request.header("authorization") != "Bearer good":
            return vt.Response.text(401)
        return None

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style), process_request=auth)
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(f"ws://127.0.0.1:{server.port}/", compression=None):
                    pass
            assert info.value.response.status_code == 401
            async with ws_connect(
                f"ws://127.0.0.1:{server.port}/", additional_headers={"Authorization": "Bearer good"},
                compression=None,
            ) as ws:
                await ws.send("in")
                assert await ws.recv() == "in"
            server.shutdown()


@needs_websockets_trio
async def test_tls_with_websockets_client(tmp_path: Path, handler_style: str) -> None:
    certs = Certs(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style), ssl_context=certs.server_context)
            async with ws_connect(
                f"wss://127.0.0.1:{server.port}/", ssl=certs.client_context, compression=None
            ) as ws:
                await ws.send("secure")
                assert await ws.recv() == "secure"
                big = b"\x5a" * 300_000
                await ws.send(big)
                assert await ws.recv() == big
            server.shutdown()


async def test_asyncio_websockets_client_in_a_thread(handler_style: str) -> None:
    from websockets.asyncio.client import connect as aio_connect

    async def client(port: int) -> list[object]:
        got: list[object] = []
        async with aio_connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
            for message in ("one", b"two", "three" * 10_000):
                await ws.send(message)
                got.append(await ws.recv())
        return got

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, echo_for(handler_style))
            got = await trio.to_thread.run_sync(lambda: asyncio.run(client(server.port)))
            server.shutdown()
    assert got == ["one", b"two", "three" * 10_000]


# ----------------------------------------------------------------- our client, their server


async def _ws_echo(ws: object) -> None:
    async for message in ws:  # type: ignore[attr-defined]
        await ws.send(message)  # type: ignore[attr-defined]


async def _start_ws_server(nursery: trio.Nursery, **options: object) -> int:
    server = await nursery.start(
        lambda task_status: ws_serve(_ws_echo, 0, host="127.0.0.1", task_status=task_status, **options)
    )
    return int(server.listeners[0].socket.getsockname()[1])


@needs_websockets_trio
async def test_volleyio_client_against_websockets_server() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await _start_ws_server(nursery, compression=None)
            async with vt.connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send("text ✓")
                assert await ws.receive() == "text ✓"
                await ws.send(b"\x00" * 70_000)
                assert await ws.receive() == b"\x00" * 70_000
                big = bytes(range(256)) * 4096
                await ws.send(big)
                assert await ws.receive() == big
                await ws.ping(b"abc")  # returns once the pong arrived
                stats = ws.statistics()
                assert stats.messages_sent == 3 and stats.messages_received == 3
                assert stats.pongs_received == 1
            nursery.cancel_scope.cancel()


@needs_websockets_trio
async def test_volleyio_client_close_code_seen_by_websockets_server() -> None:
    codes: list[int | None] = []

    async def handler(ws: object) -> None:
        try:
            await ws.recv()  # type: ignore[attr-defined]
        except WSConnectionClosed as exc:
            codes.append(exc.rcvd.code if exc.rcvd else None)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: ws_serve(handler, 0, host="127.0.0.1", task_status=task_status)
            )
            port = server.listeners[0].socket.getsockname()[1]
            async with vt.connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.close(4321, "done here")
            assert ws.close_code == 4321
            while not codes:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert codes == [4321]


@needs_websockets_trio
async def test_volleyio_client_sees_websockets_server_close() -> None:
    async def handler(ws: object) -> None:
        await ws.aclose(1008, "policy")  # type: ignore[attr-defined]

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: ws_serve(handler, 0, host="127.0.0.1", task_status=task_status)
            )
            port = server.listeners[0].socket.getsockname()[1]
            async with vt.connect(f"ws://127.0.0.1:{port}/") as ws:
                with pytest.raises(vt.ConnectionClosedError) as info:
                    await ws.receive()
                assert (info.value.code, info.value.reason) == (1008, "policy")
            nursery.cancel_scope.cancel()


@needs_websockets_trio
async def test_volleyio_client_subprotocol_headers_tls_against_websockets(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    seen: dict[str, object] = {}

    async def handler(ws: object) -> None:
        seen["sub"] = ws.subprotocol  # type: ignore[attr-defined]
        seen["hdr"] = ws.request.headers.get("X-Extra")  # type: ignore[attr-defined]
        await _ws_echo(ws)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: ws_serve(
                    handler, 0, host="127.0.0.1", ssl=certs.server_context,
                    subprotocols=["b", "a"], task_status=task_status,  # type: ignore[list-item]
                )
            )
            port = server.listeners[0].socket.getsockname()[1]
            async with vt.connect(
                f"wss://127.0.0.1:{port}/", ssl_context=certs.client_context,
                subprotocols=["a", "b"], extra_headers=[("X-Extra", "1")],
            ) as ws:
                assert ws.subprotocol in ("a", "b")
                await ws.send("over tls")
                assert await ws.receive() == "over tls"
            nursery.cancel_scope.cancel()
    assert seen["hdr"] == "1" and seen["sub"] in ("a", "b")


@needs_websockets_trio
async def test_connect_error_carries_status_from_websockets_server() -> None:
    from websockets.http11 import Response as WSResponse
    from websockets.datastructures import Headers

    def reject(connection: object, request: object) -> WSResponse:
        return WSResponse(403, "Forbidden", Headers(), b"no")

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: ws_serve(
                    _ws_echo, 0, host="127.0.0.1", process_request=reject, task_status=task_status
                )
            )
            port = server.listeners[0].socket.getsockname()[1]
            with pytest.raises(vt.ConnectError) as info:
                async with vt.connect(f"ws://127.0.0.1:{port}/"):
                    pass
            assert info.value.status == 403
            nursery.cancel_scope.cancel()


@needs_websockets_trio
async def test_receive_many_batches_in_order_and_assembles_fragments() -> None:
    batches: list[list[object]] = []

    async def handler(ws: vt.WebSocketConnection) -> None:
        await trio.sleep(0.3)  # let everything arrive first
        try:
            while True:
                batches.append(list(await ws.receive_many(max_messages=5)))
        except vt.ConnectionClosed:
            pass

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            async with ws_connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
                for i in range(12):
                    await ws.send(f"m{i}")
                await ws.send(["frag", "mented"])
                await ws.send(b"last")
                await trio.sleep(0.6)
            while not batches or server.connections:
                await trio.sleep(0.01)
            server.shutdown()
    flat = [message for batch in batches for message in batch]
    assert flat == [f"m{i}" for i in range(12)] + ["fragmented", b"last"]
    assert all(1 <= len(batch) <= 5 for batch in batches)
    assert ["fragmented"] in batches  # a fragmented message comes alone
    assert len(batches[0]) == 5
