"""volleyio.trio against Node's ``ws`` (client and server), from tests/js (``npm ci``)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from _trio_support import JS_DIR, TEST_TIMEOUT, echo_handler, node_path, node_ws_available, require_peer, start_server

pytestmark = pytest.mark.interop


@pytest.fixture
def node() -> str:
    require_peer(node_ws_available(), "node with tests/js/node_modules/ws (run npm ci in tests/js)")
    path = node_path()
    assert path is not None
    return path


async def _run_node(node: str, *args: str) -> dict[str, Any]:
    result = await trio.run_process([node, *args], cwd=str(JS_DIR), capture_stdout=True, capture_stderr=True,
                                    check=False)
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"node printed nothing; stderr: {result.stderr.decode()[-2000:]}"
    data: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in data, data
    return data


def _expected_big() -> tuple[int, int]:
    big = bytes(i % 251 for i in range(1_000_000))
    return len(big), sum(big) % 65536


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_node_ws_client_against_volleyio_server(node: str, compression: str | None, handler_style: str) -> None:
    seen: dict[str, Any] = {}

    async def echo(ws: vt.WebSocketConnection) -> None:
        seen["extensions"] = [e.name for e in ws.extensions]
        try:
            await echo_handler(ws)
        except vt.ConnectionClosed as exc:  # pragma: no cover - reported below
            seen["error"] = exc
        seen["close"] = (ws.close_code, ws.close_reason)

    class Echo(vt.MessageHandler):
        def on_open(self, ws: vt.WebSocketConnection) -> None:
            seen["extensions"] = [e.name for e in ws.extensions]

        def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
            ws.send_nowait(message)

        def on_close(self, ws: vt.WebSocketConnection) -> None:
            seen["close"] = (ws.close_code, ws.close_reason)

    handler: Any = echo if handler_style == "async" else Echo()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler, subprotocols=["chat.v1"], compression=compression)
            out = await _run_node(node, "ws_client.js", f"ws://127.0.0.1:{server.port}/",
                                  "deflate" if compression else "plain")
            while "close" not in seen:
                await trio.sleep(0.01)
            server.shutdown()
    assert out["protocol"] == "chat.v1"
    echoes = out["echoes"]
    assert echoes[0] == {"binary": False, "text": "héllo ✓"}
    assert echoes[1]["binary"] and echoes[1]["hex"] == "000102ff"
    assert (echoes[2]["length"], echoes[2]["sum"]) == _expected_big()
    assert echoes[3] == {"binary": False, "text": "ab€cd"}
    assert echoes[4] == {"binary": False, "text": "x" * 5000}
    assert out["pong"] == "node-ping"
    assert out["close"]["code"] == 4000  # the echo carries the code (RFC 6455 5.5.1)
    assert seen["close"] == (4000, "node bye")
    if compression:
        assert seen["extensions"] == ["permessage-deflate"]
        assert "permessage-deflate" in out["extensions"]
    else:
        assert seen["extensions"] == []


class NodeServer:
    def __init__(self, process: trio.Process, port: int) -> None:
        self.process = process
        self.port = port


async def _start_node_server(nursery: trio.Nursery, node: str, *args: str) -> NodeServer:
    process = await trio.lowlevel.open_process(
        [node, "ws_server.js", *args], cwd=str(JS_DIR), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    buf = b""
    while b"\n" not in buf:
        chunk = await process.stdout.receive_some(1024)
        assert chunk, "node ws server exited before listening"
        buf += chunk
    port = int(json.loads(buf.split(b"\n", 1)[0])["port"])
    return NodeServer(process, port)


async def _stop(server: NodeServer) -> None:
    assert server.process.stdin is not None
    await server.process.stdin.aclose()
    with trio.move_on_after(5):
        await server.process.wait()
    if server.process.returncode is None:
        server.process.kill()  # only the process this test started
        await server.process.wait()


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_volleyio_client_against_node_ws_server(node: str, compression: str | None) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await _start_node_server(nursery, node, "deflate" if compression else "plain")
            try:
                async with vt.connect(
                    f"ws://127.0.0.1:{server.port}/", subprotocols=["chat.v1", "chat.v2"],
                    extra_headers=[("X-Token", "abc")], compression=compression,
                ) as ws:
                    assert ws.subprotocol == "chat.v2"
                    assert [e.name for e in ws.extensions] == (["permessage-deflate"] if compression else [])
                    await ws.send("headers")
                    info = json.loads(await ws.receive())
                    assert info["token"] == "abc"
                    await ws.send("text ✓")
                    assert await ws.receive() == "text ✓"
                    await ws.send(b"\x00\x01\xfe")
                    assert await ws.receive() == b"\x00\x01\xfe"
                    big = bytes(i % 251 for i in range(1_000_000))
                    await ws.send(big)
                    assert await ws.receive() == big
                    await ws.send("z" * 10_000)
                    assert await ws.receive() == "z" * 10_000
                    await ws.ping(b"vio")  # Node answers with a pong
                    await ws.send("ping")  # Node pings us; we answer by ourselves
                    assert await ws.receive() == "pong:from-node"
                    await ws.send("close:4002:node closing")
                    with pytest.raises(vt.ConnectionClosedError) as closed:
                        await ws.receive()
                    assert (closed.value.code, closed.value.reason) == (4002, "node closing")
            finally:
                await _stop(server)


async def test_volleyio_client_close_code_to_node(node: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await _start_node_server(nursery, node, "plain")
            try:
                async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                    await ws.send("hi")
                    assert await ws.receive() == "hi"
                    await ws.close(1000, "done")
                    # Node echoes our close frame: a clean closing handshake.
                    assert ws.close_code == 1000 and ws.close_reason == "done"
            finally:
                await _stop(server)
