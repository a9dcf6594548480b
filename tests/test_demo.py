"""The demo server behind ``python -m volleyio``: page, chat broadcast, counters, bad input."""

from __future__ import annotations

import json

import trio

from volleyio import _speedups
from volleyio.demo.server import start_demo
from volleyio.trio import connect


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def receive_type(ws, wanted: str) -> dict:  # type: ignore[no-untyped-def]
    while True:
        message = json.loads(await ws.receive())
        if message["type"] == wanted:
            return message


async def test_page_is_served_and_unknown_paths_are_404() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server, _ = await start_demo(nursery, "127.0.0.1", 0)
            status, body = await http_get(server.port, "/")
            assert status == 200
            assert b"<title>volleyio demo</title>" in body
            assert b"/ws" in body
            status, _ = await http_get(server.port, "/nope")
            assert status == 404
            nursery.cancel_scope.cancel()


async def test_chat_is_broadcast_and_counters_are_published() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server, room = await start_demo(nursery, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with connect(url) as alice, connect(url) as bob:
                assert (await receive_type(alice, "welcome"))["transport"] == "websocket"
                await receive_type(bob, "welcome")
                await alice.send(json.dumps({"type": "chat", "name": "alice", "text": " hi bob "}))
                for ws in (alice, bob):
                    line = await receive_type(ws, "chat")
                    assert (line["name"], line["text"]) == ("alice", "hi bob")
                stats = await receive_type(bob, "stats")
                assert stats["clients"] == 2
                assert stats["messages_in"] >= 1
                assert stats["speedups"] == _speedups.IMPLEMENTATION
            nursery.cancel_scope.cancel()


async def test_bad_chat_input_is_refused_without_dropping_the_client() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server, room = await start_demo(nursery, "127.0.0.1", 0)
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await receive_type(ws, "welcome")
                for bad, reason in [
                    ("not json", "not JSON"),
                    ('{"type": "chat", "name": 1, "text": "x"}', "name and text must be strings"),
                    (json.dumps({"type": "chat", "name": "a", "text": "x" * 1001}), "longer than 1000"),
                    ('{"type": "chat", "name": "a", "text": "   "}', "empty message"),
                ]:
                    await ws.send(bad)
                    assert reason in (await receive_type(ws, "error"))["reason"]
                await ws.send(b"\x00binary")
                assert "JSON text" in (await receive_type(ws, "error"))["reason"]
                await ws.send(json.dumps({"type": "chat", "name": "", "text": "still here"}))
                line = await receive_type(ws, "chat")
                assert (line["name"], line["text"]) == ("anonymous", "still here")
            nursery.cancel_scope.cancel()
